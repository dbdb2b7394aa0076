"""VirtualService `http[]` entries → model routes, with Istio's semantics (core/route/route.go).

Each `match[]` condition becomes its own route, in order (no match = prefix "/"); conditions that do not
apply to this proxy or port (`port`, `sourceLabels`, `sourceNamespace`, `gateways` without "mesh") are left
out, as Istio evaluates them when it generates a proxy's configuration. Defaults applied here: timeout 0
(disabled), Istio's default retry policy when `retries` is absent, 100% for fault and mirror percentages.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from controlplane.api import common
from controlplane.api.common import labels_match
from controlplane.api.destination import Destination
from controlplane.api.httproute import GRPC_STATUS, HeaderOperations, HTTPMatchRequest, HTTPRoute
from controlplane.api.virtualservice import MESH_GATEWAY
from controlplane.model import retries
from controlplane.model.cluster_policy import HashKey
from controlplane.model.destinationrules import HostRules, cluster_policy
from controlplane.model.identity import ProxyIdentity
from controlplane.model.proxy_model import ClusterRef
from controlplane.model.routemodel import (
    Cors,
    DirectResponse,
    Fault,
    Forward,
    HeaderMatch,
    HeaderOps,
    MatchKind,
    Mirror,
    Redirect,
    Rewrite,
    Route,
    RouteMatch,
    StringMatch,
    WeightedCluster,
)
from controlplane.model.services import Registry, resolve_port

# What a route to an undefined subset answers: Envoy's own answer for a missing cluster (NC) is 503.
MISSING_SUBSET_STATUS = 503


@dataclass(frozen=True)
class RouteContext:
    registry: Registry
    rules: Mapping[str, HostRules]
    proxy: ProxyIdentity
    # The namespace the VirtualService was written in (short host names resolve there).
    namespace: str

    def cluster(self, destination: Destination, request_port: int | None = None) -> ClusterRef | None:
        hostport = resolve_port(self.registry, destination, self.namespace, request_port)
        if hostport is None:
            return None
        return ClusterRef(hostport, destination.subset or "")

    def subset_defined(self, ref: ClusterRef) -> bool:
        rules = self.rules.get(ref.service.host)
        return not ref.subset or (rules is not None and ref.subset in rules.subsets)

    def hash_key(self, ref: ClusterRef) -> HashKey | None:
        policy = cluster_policy(self.rules.get(ref.service.host), ref.service.port, ref.subset)
        return policy.load_balancer.hash_key


def default_route(ctx: RouteContext, ref: ClusterRef) -> Route:
    """Istio's BuildDefaultHTTPOutboundRoute: prefix "/", timeout 0, the default retry policy."""
    key = ctx.hash_key(ref)
    return Route(
        RouteMatch(),
        Forward((WeightedCluster(ref, 100),)),
        is_default=True,
        retry=retries.default_policy(previous_hosts=key is None),
        hash_key=key,
    )


def http_routes(ctx: RouteContext, http: HTTPRoute, port: int) -> Iterator[Route]:
    """The routes of one `http[]` entry for a virtual host on `port`; nothing when no match applies."""
    matches: list[HTTPMatchRequest | None] = [m for m in http.match if _applies(ctx.proxy, m, port)]
    if http.match and not matches:
        return
    action, keys = _action(ctx, http, port)
    key = keys[0] if keys and all(k == keys[0] for k in keys) else None
    for match in matches or [None]:
        yield Route(
            _route_match(match),
            action,
            http_name=http.name,
            match_name=match.name if match is not None else None,
            timeout_ms=http.timeout or 0,
            retry=retries.policy(http.retries, previous_hosts=not any(keys)) if http.route else None,
            rewrite=_rewrite(http),
            fault=_fault(http),
            cors=_cors(http),
            request_headers=_header_ops(http.headers.request if http.headers else None),
            response_headers=_header_ops(http.headers.response if http.headers else None),
            mirror=_mirror(ctx, http),
            hash_key=key,
            websocket=http.websocket_upgrade,
        )


def _applies(proxy: ProxyIdentity, match: HTTPMatchRequest, port: int) -> bool:
    if match.port is not None and match.port != port:
        return False
    if match.source_labels and not labels_match(match.source_labels, proxy.label_map):
        return False
    if match.source_namespace is not None and match.source_namespace != proxy.namespace:
        return False
    return match.gateways is None or MESH_GATEWAY in match.gateways


def _action(
    ctx: RouteContext, http: HTTPRoute, port: int
) -> tuple[Forward | Redirect | DirectResponse, list[HashKey | None]]:
    if http.redirect is not None:
        r = http.redirect
        return Redirect(r.redirect_code, r.uri, r.authority, r.port, r.scheme), []
    if http.direct_response is not None:
        body = http.direct_response.body
        return DirectResponse(
            http.direct_response.status, body.string if body else None, body.bytes if body else None
        ), []
    weighted: list[WeightedCluster] = []
    single = len(http.route) == 1
    for item in http.route:
        ref = ctx.cluster(item.destination, port)
        if ref is None:
            # An undeclared host (a validation warning; a bad port was dropped there): Istio's route
            # names a cluster that does not exist, and Envoy answers 503.
            return DirectResponse(MISSING_SUBSET_STATUS), []
        if not ctx.subset_defined(ref):
            return DirectResponse(MISSING_SUBSET_STATUS), []
        weight = 100 if single and item.weight is None else item.weight or 0
        if weight > 0:
            weighted.append(WeightedCluster(ref, weight))
    keys = [ctx.hash_key(w.cluster) for w in weighted]
    return Forward(tuple(weighted)), keys


def _string_match(match: common.StringMatch) -> StringMatch:
    if match.exact is not None:
        return StringMatch(MatchKind.EXACT, match.exact)
    if match.prefix is not None:
        return StringMatch(MatchKind.PREFIX, match.prefix)
    if match.regex is not None and match.regex != "*":
        return StringMatch(MatchKind.REGEX, match.regex)
    # Istio: an empty StringMatch, or the regex "*", means "the header is present".
    return StringMatch(MatchKind.PRESENT)


def _route_match(match: HTTPMatchRequest | None) -> RouteMatch:
    if match is None:
        return RouteMatch()
    headers = [HeaderMatch(name, _string_match(value)) for name, value in sorted(match.headers.items())]
    headers += [
        HeaderMatch(name, _string_match(value), invert=True)
        for name, value in sorted(match.without_headers.items())
    ]
    for pseudo, value in (
        (":method", match.method),
        (":authority", match.authority),
        (":scheme", match.scheme),
    ):
        if value is not None:
            headers.append(HeaderMatch(pseudo, _string_match(value)))
    query = tuple((name, _query_match(value)) for name, value in sorted(match.query_params.items()))
    path = _string_match(match.uri) if match.uri is not None else StringMatch(MatchKind.PREFIX, "/")
    return RouteMatch(path, not match.ignore_uri_case, tuple(headers), query)


def _query_match(match: common.StringMatch) -> StringMatch:
    # Istio: `exact: ""` means "the parameter is present".
    if match.exact == "" or match.is_empty:
        return StringMatch(MatchKind.PRESENT)
    return _string_match(match)


def _rewrite(http: HTTPRoute) -> Rewrite | None:
    rewrite = http.rewrite
    if rewrite is None:
        return None
    regex = rewrite.uri_regex_rewrite
    return Rewrite(
        prefix=rewrite.uri,
        regex=regex.match if regex else None,
        regex_substitution=regex.rewrite if regex else None,
        authority=rewrite.authority,
    )


def _fault(http: HTTPRoute) -> Fault | None:
    fault = http.fault
    if fault is None:
        return None
    delay, abort = fault.delay, fault.abort
    return Fault(
        delay_ms=delay.fixed_delay if delay else None,
        delay_percent=delay.percentage.value if delay and delay.percentage else 100.0,
        abort_http_status=abort.http_status if abort else None,
        abort_grpc_status=GRPC_STATUS[abort.grpc_status] if abort and abort.grpc_status else None,
        abort_percent=abort.percentage.value if abort and abort.percentage else 100.0,
    )


def _cors(http: HTTPRoute) -> Cors | None:
    cors = http.cors_policy
    if cors is None:
        return None
    return Cors(
        allow_origins=tuple(_string_match(origin) for origin in cors.allow_origins),
        allow_methods=cors.allow_methods,
        allow_headers=cors.allow_headers,
        expose_headers=cors.expose_headers,
        max_age_s=cors.max_age // 1000 if cors.max_age is not None else None,
        allow_credentials=cors.allow_credentials,
    )


def _header_ops(ops: HeaderOperations | None) -> HeaderOps:
    if ops is None:
        return HeaderOps()
    return HeaderOps(
        tuple(sorted(ops.set.items())), tuple(sorted(ops.add.items())), tuple(sorted(ops.remove))
    )


def _mirror(ctx: RouteContext, http: HTTPRoute) -> Mirror | None:
    if http.mirror is None:
        return None
    ref = ctx.cluster(http.mirror)
    if ref is None or not ctx.subset_defined(ref):
        return None
    return Mirror(ref, http.mirror_percentage.value if http.mirror_percentage else 100.0)
