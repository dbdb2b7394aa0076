"""Sidecar HTTP routing: which virtual hosts the outbound listener has, what they answer, where they route.

One virtual host per (service host, HTTP port). Its authorities are `host:port`, plus the bare `host` when
the port is 80 or is the service's only HTTP port — that is what a client sends for `http://host/...`
(HTTP_PROXY absolute-form) or with `Host: host`. Envoy rejects a route configuration in which two virtual
hosts share a domain, so authorities are claimed in sorted (host, port) order and a repeat is skipped;
with validated policy that never happens, but a broken snapshot must be impossible, not merely unlikely.

Routes follow Istio (core/route/route.go): a service routed by a mesh VirtualService gets its `http[]`
entries in order, one route per `match[]` condition (no match = prefix "/"), first match wins, and
generation stops after the first catch-all; nothing is appended, so an unmatched path is a 404. A service
without a VirtualService gets a single default route, prefix "/" to its own port. A VirtualService whose
`http[]` entries were all dropped (no usable destination) counts as absent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from controlplane.api.policyset import PolicySet
from controlplane.api.virtualservice import HTTPMatchRequest, HTTPRoute, VirtualService
from controlplane.build.model import ClusterRef, HostPort, PathMatch, Route, VirtualHost
from controlplane.build.services import Service, resolve_destination

# The port clients leave out of the authority for plain HTTP.
HTTP_DEFAULT_PORT = 80


def mesh_routing(policy: PolicySet) -> dict[str, VirtualService]:
    """Host → the VirtualService that routes it for sidecars (the first by namespace/name wins)."""
    routing: dict[str, VirtualService] = {}
    for vs in policy.virtual_services():
        if vs.spec.applies_to_mesh:
            for host in vs.spec.hosts:
                routing.setdefault(host, vs)
    return routing


def build_virtual_hosts(
    registry: Mapping[str, Service], routing: Mapping[str, VirtualService]
) -> tuple[VirtualHost, ...]:
    """The outbound virtual hosts, sorted by (host, port), with proxy-wide unique authorities."""
    claimed: set[str] = set()
    virtual_hosts: list[VirtualHost] = []
    for host in sorted(registry):
        service = registry[host]
        http_ports = service.http_ports
        vs = routing.get(host)
        routes_by_vs = _vs_routes(registry, vs) if vs is not None else ()
        for port in http_ports:
            hostport = HostPort(host, port.number)
            candidates = [str(hostport)]
            if port.number == HTTP_DEFAULT_PORT or len(http_ports) == 1:
                candidates.append(host)
            authorities = tuple(_claim(claimed, candidates))
            if not authorities:
                continue
            routes = routes_by_vs or (_default_route(hostport),)
            virtual_hosts.append(VirtualHost(hostport, authorities, routes))
    return tuple(virtual_hosts)


def _claim(claimed: set[str], candidates: list[str]) -> Iterator[str]:
    for authority in candidates:
        # Envoy compares domains case-insensitively, so must we.
        key = authority.lower()
        if key not in claimed:
            claimed.add(key)
            yield authority


def _default_route(hostport: HostPort) -> Route:
    return Route(PathMatch("/"), ClusterRef(hostport), is_default=True)


def _vs_routes(registry: Mapping[str, Service], vs: VirtualService) -> tuple[Route, ...]:
    routes: list[Route] = []
    for http in vs.spec.http:
        destination = resolve_destination(registry, http.route[0].destination)
        if destination is None:
            continue  # reported by validation; the entry is dropped and later entries still apply
        for route in _http_routes(http, destination):
            routes.append(route)
            if route.match.matches_everything:
                # Istio stops here too: anything after a catch-all is unreachable.
                return tuple(routes)
    return tuple(routes)


def _http_routes(http: HTTPRoute, destination: ClusterRef) -> Iterator[Route]:
    matches: tuple[HTTPMatchRequest | None, ...] = http.match or (None,)
    for match in matches:
        prefix = match.uri.prefix if match is not None and match.uri is not None else "/"
        yield Route(
            PathMatch(prefix),
            destination,
            http_name=http.name,
            match_name=match.name if match is not None else None,
        )
