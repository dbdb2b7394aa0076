"""Route actions: forward (one cluster or weighted), redirect, direct response, and what rides on a
forward — timeout, rewrite, consistent-hash `hash_policy`, request mirroring.

Istio (core/route/route.go): one destination → `cluster`; several → `weighted_clusters` (weight-0
destinations are left out by the build stage); `timeout` 0 disables Envoy's 15s default; rewrite.uri →
`prefix_rewrite`, uriRegexRewrite → `regex_rewrite`, authority → `host_rewrite_literal`; mirrors →
`request_mirror_policies` with a runtime fraction (100% when no percentage).
"""

from __future__ import annotations

import base64

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2

from controlplane.model.cluster_policy import HashKey
from controlplane.model.routemodel import DirectResponse, Forward, Redirect, Route
from controlplane.translate import names
from controlplane.translate.protos import duration_ms, fractional_percent
from controlplane.translate.retries import retry_policy

_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}


def apply_action(out: rc.Route, route: Route) -> None:
    action = route.action
    if isinstance(action, Redirect):
        out.redirect.CopyFrom(_redirect(action))
    elif isinstance(action, DirectResponse):
        out.direct_response.CopyFrom(direct_response(action))
    else:
        out.route.CopyFrom(_forward(action, route))


def _forward(action: Forward, route: Route) -> rc.RouteAction:
    out = rc.RouteAction(timeout=duration_ms(route.timeout_ms))
    if len(action.clusters) == 1:
        out.cluster = names.outbound_cluster(action.clusters[0].cluster)
    else:
        for weighted in action.clusters:
            item = out.weighted_clusters.clusters.add(name=names.outbound_cluster(weighted.cluster))
            item.weight.value = weighted.weight
    if route.retry is not None:
        out.retry_policy.CopyFrom(retry_policy(route.retry))
    rewrite = route.rewrite
    if rewrite is not None:
        if rewrite.prefix is not None:
            out.prefix_rewrite = rewrite.prefix
        if rewrite.regex is not None:
            out.regex_rewrite.pattern.CopyFrom(regex_pb2.RegexMatcher(regex=rewrite.regex))
            out.regex_rewrite.substitution = rewrite.regex_substitution or ""
        if rewrite.authority is not None:
            out.host_rewrite_literal = rewrite.authority
    if route.hash_key is not None:
        out.hash_policy.append(hash_policy(route.hash_key))
    if route.mirror is not None:
        mirror = out.request_mirror_policies.add(cluster=names.outbound_cluster(route.mirror.cluster))
        mirror.runtime_fraction.default_value.CopyFrom(fractional_percent(route.mirror.percent))
    if route.websocket:
        # A route-level upgrade config enables the upgrade even though the connection manager lists none.
        upgrade = out.upgrade_configs.add(upgrade_type="websocket")
        upgrade.enabled.value = True
    return out


def hash_policy(key: HashKey) -> rc.RouteAction.HashPolicy:
    policy = rc.RouteAction.HashPolicy()
    if key.header is not None:
        policy.header.header_name = key.header
    elif key.cookie is not None:
        policy.cookie.name = key.cookie
        if key.cookie_path:
            policy.cookie.path = key.cookie_path
        if key.cookie_ttl_ms is not None:
            # A ttl makes Envoy generate the cookie when the request has none (Istio requires one).
            policy.cookie.ttl.CopyFrom(duration_ms(key.cookie_ttl_ms))
    elif key.query_parameter is not None:
        policy.query_parameter.name = key.query_parameter
    else:
        policy.connection_properties.source_ip = True
    return policy


def _redirect(redirect: Redirect) -> rc.RedirectAction:
    out = rc.RedirectAction(response_code=_REDIRECT_CODES[redirect.code])
    if redirect.path is not None:
        out.path_redirect = redirect.path
    if redirect.authority is not None:
        out.host_redirect = redirect.authority
    if redirect.port is not None:
        out.port_redirect = redirect.port
    if redirect.scheme is not None:
        out.scheme_redirect = redirect.scheme
    return out


def direct_response(response: DirectResponse) -> rc.DirectResponseAction:
    out = rc.DirectResponseAction(status=response.status)
    if response.body is not None:
        out.body.CopyFrom(base_pb2.DataSource(inline_string=response.body))
    elif response.body_base64 is not None:
        out.body.CopyFrom(base_pb2.DataSource(inline_bytes=base64.b64decode(response.body_base64)))
    return out
