"""Which VirtualServices a Gateway server serves, and what they become there (Istio's binding rules,
pilot/pkg/networking/core/gateway.go):

- A VirtualService binds to a Gateway when its `gateways` names it: `name` (in the VirtualService's
  namespace) or `namespace/name`. Without `gateways` it binds to sidecars only (`mesh`).
- Its hosts must intersect the server's hosts: a server host `[ns/]host` admits VirtualServices of namespace
  `ns` (`*` any, `.` the Gateway's own; no namespace = any) whose host equals `host`, or ends with
  `.suffix` for `*.suffix`, or anything for `*`; a wildcard VirtualService host (`*`, `*.suffix`) meets
  the server hosts it covers. Each intersection (the more specific host) becomes a virtual host.
- Per-match `gateways`, `port` (the server's port number), `sourceLabels` (the gateway's labels) and
  `sourceNamespace` are evaluated for this server, as Istio does when it generates the gateway's routes.
- Several VirtualServices binding one host are merged in namespace/name order (Istio merges them too);
  route generation stops after the first catch-all.
- HTTP servers use `http[]`; TLS passthrough servers `tls[]` (one chain per match, SNI = its sniHosts that
  the server admits); TCP and TLS-terminating servers the first applicable `tcp[]` entry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from controlplane.api.common import labels_match
from controlplane.api.destination import RouteDestination
from controlplane.api.gateway import Gateway, Server, split_server_host
from controlplane.api.httproute import HTTPMatchRequest, HTTPRoute
from controlplane.api.policyset import PolicySet
from controlplane.api.virtualservice import L4MatchAttributes, TLSMatchAttributes, VirtualService
from controlplane.model.destinationrules import HostRules
from controlplane.model.gatewaymodel import GatewayChain, GatewayRoute, GatewayVirtualHost, RateLimits
from controlplane.model.httproutes import RouteContext, http_routes
from controlplane.model.identity import ProxyIdentity
from controlplane.model.proxy_model import ClusterRef, PolicyRef
from controlplane.model.routemodel import Forward, Route, WeightedCluster
from controlplane.model.services import Registry, origin_of


def gateway_refs(refs: Sequence[str] | None, namespace: str) -> set[str]:
    """`gateways:` entries as `namespace/name` (short names are in the referring VirtualService's)."""
    return {ref if "/" in ref else f"{namespace}/{ref}" for ref in refs or ()}


def host_admitted(server_host: str, host: str, vs_namespace: str, gw_namespace: str) -> bool:
    return bound_host(server_host, host, vs_namespace, gw_namespace) is not None


def bound_host(server_host: str, host: str, vs_namespace: str, gw_namespace: str) -> str | None:
    """The virtual host a VirtualService host gets on a server host: the more specific of the two when
    one's pattern covers the other (Istio intersects them, so a VirtualService `*` on a server
    `api.example.com` serves `api.example.com`); None when they do not meet."""
    namespace, pattern = split_server_host(server_host)
    if namespace not in ("*", vs_namespace) and not (namespace == "." and vs_namespace == gw_namespace):
        return None
    if _covers(pattern, host):
        return host
    if _covers(host, pattern):
        return pattern
    return None


def _covers(pattern: str, host: str) -> bool:
    """Whether every name `host` stands for is matched by `pattern` (both may be wildcards)."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host != "*"
    return host == pattern


@dataclass(frozen=True)
class Binder:
    policy: PolicySet
    registry: Registry
    rules: Mapping[str, HostRules]
    proxy: ProxyIdentity
    limits: RateLimits

    def bound(self, gw: Gateway, server: Server) -> Iterator[tuple[VirtualService, list[str]]]:
        """VirtualServices bound to `gw` with their hosts that `server` admits (none: not yielded)."""
        for vs in self.policy.virtual_services():
            if gw.ref not in gateway_refs(vs.spec.gateways, vs.metadata.namespace):
                continue
            found = (
                bound_host(s, host, vs.metadata.namespace, gw.metadata.namespace)
                for host in vs.spec.hosts
                for s in server.hosts
            )
            hosts = sorted({host for host in found if host is not None})
            if hosts:
                yield vs, hosts

    # -- HTTP ----------------------------------------------------------------------------------------

    def virtual_hosts(self, gw: Gateway, server: Server) -> list[GatewayVirtualHost]:
        port = server.port.number
        redirect = server.tls is not None and server.tls.https_redirect
        routes: dict[str, list[GatewayRoute]] = {}
        origins: dict[str, set[PolicyRef]] = {}
        for vs, hosts in self.bound(gw, server):
            made = list(self._vs_routes(gw, vs, port))
            if not made:
                continue  # e.g. a VirtualService with only tls/tcp routes: no HTTP virtual host
            for host in hosts:
                existing = routes.setdefault(host, [])
                if any(r.route.match.matches_everything for r in existing):
                    continue  # an earlier VirtualService already catches everything for this host
                existing.extend(made)
                origins.setdefault(host, set()).add(origin_of(self.policy, vs))
        if redirect:
            # Istio answers every host of an httpsRedirect server with the redirect, bound or not.
            for server_host in server.hosts:
                routes.setdefault(split_server_host(server_host)[1], [])
        gw_origin = origin_of(self.policy, gw)
        return [
            GatewayVirtualHost(
                host, port, tuple(found), redirect, tuple(sorted(origins.get(host, set()) | {gw_origin}))
            )
            for host, found in sorted(routes.items())
        ]

    def _vs_routes(self, gw: Gateway, vs: VirtualService, port: int) -> Iterator[GatewayRoute]:
        ctx = RouteContext(self.registry, self.rules, self.proxy, vs.metadata.namespace)
        for http in vs.spec.http:
            entry = self._for_gateway(gw, vs, http)
            if entry is None:
                continue
            for route in http_routes(ctx, entry, port):
                yield self._with_limits(vs, http, route)
                if route.match.matches_everything:
                    return

    def _for_gateway(self, gw: Gateway, vs: VirtualService, http: HTTPRoute) -> HTTPRoute | None:
        """`http` with match conditions for other gateways left out (None: no condition applies here).

        The remaining conditions get `gateways: None`, which `http_routes` (written for sidecars, where it
        means "applies to mesh") accepts; port/sourceLabels/sourceNamespace are still checked there.
        """
        if not http.match:
            return http
        kept: list[HTTPMatchRequest] = []
        for match in http.match:
            if match.gateways is None:
                kept.append(match)
            elif gw.ref in gateway_refs(match.gateways, vs.metadata.namespace):
                kept.append(match.model_copy(update={"gateways": None}))
        if not kept:
            return None
        return http.model_copy(update={"match": tuple(kept)})

    def _with_limits(self, vs: VirtualService, http: HTTPRoute, route: Route) -> GatewayRoute:
        route_key = f"{vs.ref}/{http.name}" if http.name else None
        route_limit = route_key if route_key in dict(self.limits.routes) else None
        hosts = (
            {w.cluster.service.host for w in route.action.clusters}
            if isinstance(route.action, Forward)
            else set()
        )
        destination = next(iter(hosts)) if len(hosts) == 1 else None
        destination_limit = destination if destination in dict(self.limits.destinations) else None
        return GatewayRoute(route, destination_limit, route_limit)

    # -- TLS passthrough and TCP ---------------------------------------------------------------------

    def passthrough_chains(self, gw: Gateway, server: Server) -> list[GatewayChain]:
        chains: list[GatewayChain] = []
        for vs, _ in self.bound(gw, server):
            namespace = vs.metadata.namespace
            for tls in vs.spec.tls:
                clusters = self._weighted(tls.route, namespace)
                for match in tls.match:
                    if not clusters or not self._l4_applies(gw, vs, match, server.port.number):
                        continue
                    sni = tuple(
                        sorted(
                            host
                            for host in match.sni_hosts
                            if any(
                                host_admitted(s, host, namespace, gw.metadata.namespace) for s in server.hosts
                            )
                        )
                    )
                    if sni:
                        chains.append(GatewayChain(server_names=sni, tcp=clusters))
        return chains

    def tcp_route(self, gw: Gateway, server: Server) -> tuple[WeightedCluster, ...]:
        for vs, _ in self.bound(gw, server):
            for tcp in vs.spec.tcp:
                if not tcp.match or any(self._l4_applies(gw, vs, m, server.port.number) for m in tcp.match):
                    clusters = self._weighted(tcp.route, vs.metadata.namespace)
                    if clusters:
                        return clusters
        return ()

    def _l4_applies(
        self, gw: Gateway, vs: VirtualService, match: L4MatchAttributes | TLSMatchAttributes, port: int
    ) -> bool:
        if match.port is not None and match.port != port:
            return False
        if match.source_labels and not labels_match(match.source_labels, self.proxy.label_map):
            return False
        return match.gateways is None or gw.ref in gateway_refs(match.gateways, vs.metadata.namespace)

    def _weighted(self, route: Sequence[RouteDestination], namespace: str) -> tuple[WeightedCluster, ...]:
        ctx = RouteContext(self.registry, self.rules, self.proxy, namespace)
        out: list[WeightedCluster] = []
        single = len(route) == 1
        for item in route:
            ref: ClusterRef | None = ctx.cluster(item.destination)
            weight = 100 if single and item.weight is None else item.weight or 0
            if ref is not None and weight > 0:
                out.append(WeightedCluster(ref, weight))
        return tuple(out)
