"""VirtualService (networking.istio.io): how requests and connections for a host are routed.

Mirrors istio/api `networking/v1/virtual_service.proto`: `hosts`, `gateways`, `http[]` (see `httproute`),
`tcp[]` (weighted routes, match on port / sourceLabels) and `tls[]` (match on `sniHosts`, port).
`exportTo` and `delegate` are rejected as "unsupported field". See
https://istio.io/latest/docs/reference/config/networking/virtual-service/.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar, Literal

from pydantic import Field

from controlplane.api.destination import HTTPRouteDestination, RouteDestination
from controlplane.api.diagnostics import WARNING, FieldPath
from controlplane.api.httproute import HTTPMatchRequest, HTTPRoute
from controlplane.api.meta import (
    ExportTarget,
    HostPattern,
    IstioModel,
    PolicyObject,
    PortNumber,
    Problem,
    duplicates,
)

# The reserved gateway name meaning "all sidecars in the mesh".
MESH_GATEWAY = "mesh"


class L4MatchAttributes(IstioModel):
    port: PortNumber | None = None
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: tuple[str, ...] | None = None


class TLSMatchAttributes(IstioModel):
    sni_hosts: tuple[str, ...] = Field(min_length=1)
    port: PortNumber | None = None
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: tuple[str, ...] | None = None


class TCPRoute(IstioModel):
    match: tuple[L4MatchAttributes, ...] = ()
    route: tuple[RouteDestination, ...] = Field(min_length=1)


class TLSRoute(IstioModel):
    match: tuple[TLSMatchAttributes, ...] = Field(min_length=1)
    route: tuple[RouteDestination, ...] = Field(min_length=1)


class VirtualServiceSpec(IstioModel):
    # Empty only in a delegate VirtualService, which `check` reports (delegation is not supported).
    # Wildcards (`*`, `*.example.com`) match Gateway server hosts; sidecars need a concrete host
    # (validate_routes reports a wildcard of a mesh VirtualService).
    hosts: tuple[HostPattern, ...] = ()
    # Absent means "mesh" only (sidecars), as in Istio.
    gateways: tuple[str, ...] | None = None
    http: tuple[HTTPRoute, ...] = ()
    tcp: tuple[TCPRoute, ...] = ()
    tls: tuple[TLSRoute, ...] = ()
    # Which namespaces' proxies (sidecars and gateways) use it (model/exports.py).
    export_to: tuple[ExportTarget, ...] = ()

    @property
    def applies_to_mesh(self) -> bool:
        """Whether sidecars use this VirtualService: `gateways` absent or naming the reserved `mesh`."""
        return self.gateways is None or MESH_GATEWAY in self.gateways


class VirtualService(PolicyObject):
    KIND: ClassVar[str] = "VirtualService"

    kind: Literal["VirtualService"]
    spec: VirtualServiceSpec

    def check(self) -> Iterator[Problem]:
        spec = self.spec
        if not spec.hosts:
            # Istio: a VirtualService without hosts is a delegate, used only through another one's
            # http[].delegate, which we do not support either.
            yield Problem(
                ("spec", "hosts"),
                "a VirtualService without hosts is a delegate; delegation (http[].delegate) is not supported",
            )
        for index in duplicates(list(spec.hosts)):
            yield Problem(("spec", "hosts", index), f"duplicate host {spec.hosts[index]!r}")
        for index, http in enumerate(spec.http):
            yield from _check_http(("spec", "http", index), http)
        for index, tcp in enumerate(spec.tcp):
            yield from _check_weights(("spec", "tcp", index, "route"), tcp.route)
        for index, tls_route in enumerate(spec.tls):
            yield from _check_weights(("spec", "tls", index, "route"), tls_route.route)
        for index, tls in enumerate(spec.tls):
            for m_index, match in enumerate(tls.match):
                for s_index, sni in enumerate(match.sni_hosts):
                    if not any(_host_covers(host, sni) for host in spec.hosts):
                        path = ("spec", "tls", index, "match", m_index, "sniHosts", s_index)
                        yield Problem(path, f"sniHost {sni!r} is not one of the VirtualService hosts")


def _check_http(path: FieldPath, http: HTTPRoute) -> Iterator[Problem]:
    actions = [
        name
        for name, value in (
            ("route", http.route),
            ("redirect", http.redirect),
            ("directResponse", http.direct_response),
        )
        if value
    ]
    if len(actions) != 1:
        message = "exactly one of route, redirect, directResponse must be set"
        yield Problem(path, f"{message} (got {', '.join(actions) or 'none'})")
    if not http.route:
        for name, value in (
            ("rewrite", http.rewrite),
            ("mirror", http.mirror),
            ("retries", http.retries),
            ("timeout", http.timeout),
        ):
            if value is not None:
                yield Problem((*path, name), f"{name} needs route (not redirect/directResponse)")
    if http.mirror_percentage is not None and http.mirror is None:
        yield Problem((*path, "mirrorPercentage"), "mirrorPercentage needs mirror")
    if "websocket_upgrade" in http.model_fields_set:
        # Istio ignores it (upgrades are always allowed there); here the route allows the upgrade when true.
        message = ("deprecated: Istio allows WebSocket upgrades on every route; here only routes with "
                   "websocketUpgrade: true allow them")
        yield Problem((*path, "websocketUpgrade"), message, severity=WARNING)
    yield from _check_weights((*path, "route"), http.route)
    for index, match in enumerate(http.match):
        yield from _check_match((*path, "match", index), match)


def _check_match(path: FieldPath, match: HTTPMatchRequest) -> Iterator[Problem]:
    for name, value in (
        ("uri", match.uri),
        ("scheme", match.scheme),
        ("method", match.method),
        ("authority", match.authority),
    ):
        if value is not None and value.is_empty:
            yield Problem((*path, name), "one of exact, prefix, regex must be set")
    for field, headers in (("headers", match.headers), ("withoutHeaders", match.without_headers)):
        for header in headers:
            if header != header.lower():
                yield Problem((*path, field, header), f"header name {header!r} must be lower case")
    for name, value in match.query_params.items():
        if value.prefix is not None:
            yield Problem((*path, "queryParams", name, "prefix"), "queryParams support exact and regex only")


def _check_weights(
    path: FieldPath, route: Sequence[HTTPRouteDestination | RouteDestination]
) -> Iterator[Problem]:
    if len(route) < 2:
        return
    for index, destination in enumerate(route):
        if destination.weight is None:
            yield Problem(
                (*path, index, "weight"), "weight is required when a route has several destinations"
            )
    if all(d.weight is not None for d in route) and sum(d.weight or 0 for d in route) == 0:
        yield Problem((*path, 0, "weight"), "the weights of a route must not all be 0")


def _host_covers(host: str, sni: str) -> bool:
    """Whether VirtualService `host` (maybe a wildcard) covers the SNI name (Istio: sniHosts must be
    covered by the VirtualService hosts)."""
    if host == "*" or host == sni:
        return True
    return host.startswith("*.") and sni.endswith(host[1:])
