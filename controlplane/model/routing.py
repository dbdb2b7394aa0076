"""Sidecar HTTP routing: which virtual hosts the outbound listener has, what they answer, where they route.

One virtual host per (service host, HTTP port). Its authorities are every domain of the host (see
`api/hosts.domains`: the host as written, plus Kubernetes-style short names and FQDN) with `:port`, and
also without the port when the port is 80 or the service's only HTTP port — what a client sends for
`http://host/...` (HTTP_PROXY absolute-form) or with `Host: host`. Envoy rejects a route configuration in
which two virtual hosts share a domain, so authorities are claimed in sorted (host, port) order and a
repeat is skipped; with validated policy that only happens for Kubernetes-style aliases of two hosts.

Routes follow Istio (core/route/route.go): a service routed by a mesh VirtualService gets its `http[]`
entries in order (see `httproutes`), first match wins, and generation stops after the first catch-all;
nothing is appended, so an unmatched request is a 404. A service without a VirtualService — or whose
VirtualService yields no route for the port — gets the default route to its own port. A mesh VirtualService
host that no service declares gets a virtual host on port 80 (Istio's rule), with the VirtualService's
routes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from controlplane.api.hosts import domains
from controlplane.api.policyset import PolicySet
from controlplane.api.virtualservice import VirtualService
from controlplane.model.destinationrules import HostRules
from controlplane.model.httproutes import RouteContext, default_route, http_routes
from controlplane.model.identity import ProxyIdentity
from controlplane.model.proxy_model import ClusterRef, HostPort, PolicyRef, Route, VirtualHost
from controlplane.model.refs import sorted_refs
from controlplane.model.services import Registry, origin_of

# (context, VirtualService, port) -> the VirtualService's routes for the port (see `build_virtual_hosts`)
RoutesOf = Callable[[RouteContext, VirtualService, int], tuple[Route, ...]]
# The port clients leave out of the authority for plain HTTP.
HTTP_DEFAULT_PORT = 80


def mesh_routing(policy: PolicySet, registry: Registry) -> dict[str, VirtualService]:
    """Canonical host → the VirtualService that routes it for sidecars (the first by namespace/name)."""
    routing: dict[str, VirtualService] = {}
    for vs in policy.virtual_services():
        if vs.spec.applies_to_mesh:
            for host in vs.spec.hosts:
                service = registry.resolve(host, vs.metadata.namespace)
                if service is not None:
                    routing.setdefault(service.host, vs)
    return routing


def build_virtual_hosts(
    policy: PolicySet,
    registry: Registry,
    rules: Mapping[str, HostRules],
    proxy: ProxyIdentity,
    routes_of: RoutesOf | None = None,
    routing: Mapping[str, VirtualService] | None = None,
) -> tuple[VirtualHost, ...]:
    """The outbound virtual hosts, sorted by (host, port), with proxy-wide unique authorities.
    `routes_of(ctx, vs, port)`: `vs_routes`, or equal routes made before (model/carry.py); `routing`:
    `mesh_routing(policy, registry)` when the caller has it (the TCP listeners need it too)."""
    routes_of = routes_of or vs_routes
    routing = mesh_routing(policy, registry) if routing is None else routing
    claimed: set[str] = set()
    virtual_hosts: list[VirtualHost] = []
    proxy_namespace = proxy.namespace
    contexts: dict[str, RouteContext] = {}  # by the namespace names resolve in (one per namespace)

    def context(namespace: str) -> RouteContext:
        found = contexts.get(namespace)
        if found is None:
            found = contexts[namespace] = RouteContext(registry, rules, proxy, namespace)
        return found

    for host, service in registry.services.items():
        http_ports = service.http_ports
        vs = routing.get(host)
        names = domains(host, service.namespace, proxy_namespace)
        for port in http_ports:
            hostport = HostPort(host, port.number)
            bare = port.number == HTTP_DEFAULT_PORT or len(http_ports) == 1
            candidates = [
                a
                for name in names
                for a in ([f"{name}:{port.number}", name] if bare else [f"{name}:{port.number}"])
            ]
            authorities = tuple(_claim(claimed, candidates))
            if not authorities:
                continue
            routes: tuple[Route, ...] = ()
            origins: list[PolicyRef] = [service.origin]
            if vs is not None:
                routes = routes_of(context(vs.metadata.namespace), vs, port.number)
                origins.append(origin_of(policy, vs))
            if not routes:
                routes = (default_route(context(service.namespace), ClusterRef(hostport)),)
            virtual_hosts.append(VirtualHost(hostport, authorities, routes, sorted_refs(origins)))
    virtual_hosts.extend(_unregistered_hosts(policy, registry, rules, proxy, claimed, routes_of))
    return tuple(sorted(virtual_hosts, key=lambda vhost: (vhost.service.host, vhost.service.port)))


def _unregistered_hosts(
    policy: PolicySet,
    registry: Registry,
    rules: Mapping[str, HostRules],
    proxy: ProxyIdentity,
    claimed: set[str],
    routes_of: RoutesOf,
) -> Iterator[VirtualHost]:
    """Mesh VirtualService hosts no service declares: Istio serves them on port 80 of the HTTP listener
    (the routes still need destinations that resolve; the others answer 503)."""
    for vs in policy.virtual_services():
        if not vs.spec.applies_to_mesh:
            continue
        for host in vs.spec.hosts:
            if host.startswith("*") or registry.resolve(host, vs.metadata.namespace) is not None:
                continue
            ctx = RouteContext(registry, rules, proxy, vs.metadata.namespace)
            routes = routes_of(ctx, vs, HTTP_DEFAULT_PORT)
            authorities = tuple(_claim(claimed, [f"{host}:{HTTP_DEFAULT_PORT}", host])) if routes else ()
            if authorities:
                hostport = HostPort(host, HTTP_DEFAULT_PORT)
                yield VirtualHost(hostport, authorities, routes, (origin_of(policy, vs),))


def _claim(claimed: set[str], candidates: list[str]) -> Iterator[str]:
    for authority in candidates:
        # Envoy compares domains case-insensitively, so must we.
        key = authority.lower()
        if key not in claimed:
            claimed.add(key)
            yield authority


def vs_routes(ctx: RouteContext, vs: VirtualService, port: int) -> tuple[Route, ...]:
    routes: list[Route] = []
    for http in vs.spec.http:
        for route in http_routes(ctx, http, port):
            routes.append(route)
            if route.match.matches_everything:
                # Istio stops here too: anything after a catch-all is unreachable.
                return tuple(routes)
    return tuple(routes)
