"""Routes: the sidecar's outbound route configuration — one virtual host per service port, plus the
catch-all virtual host of the outbound traffic policy.

Virtual hosts, their domains (the model's authorities, already unique) and routes come from the model in
order; Envoy picks the virtual host by `:authority` and then the first route that matches. The catch-all
(`domains: ["*"]`, Envoy's last resort) follows Istio: ALLOW_ANY → `allow_any` route to PassthroughCluster
(translate/passthrough.py), REGISTRY_ONLY → `block_all` with a direct 502.
"""

from __future__ import annotations

from collections.abc import Callable

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from controlplane.model.proxy_model import OutboundHttp, OutboundPolicy, Route, VirtualHost
from controlplane.translate import names
from controlplane.translate.cors import cors_policy
from controlplane.translate.faults import http_fault
from controlplane.translate.headers import apply_headers
from controlplane.translate.passthrough import catch_all_virtual_host
from controlplane.translate.protos import pack
from controlplane.translate.route_action import apply_action
from controlplane.translate.route_match import route_match


def outbound_route_config(
    outbound: OutboundHttp, translate: Callable[[VirtualHost], rc.VirtualHost] | None = None
) -> route_pb2.RouteConfiguration:
    """The route table; `translate`: `translate_virtual_host`, or a memo of it (xds/assembly.py)."""
    translate = translate or translate_virtual_host
    virtual_hosts = [translate(virtual_host) for virtual_host in outbound.virtual_hosts]
    virtual_hosts.append(catch_all_virtual_host(outbound.outbound_policy is OutboundPolicy.ALLOW_ANY))
    return route_pb2.RouteConfiguration(name=names.OUTBOUND_HTTP_ROUTE_CONFIG, virtual_hosts=virtual_hosts)


def translate_virtual_host(virtual_host: VirtualHost) -> rc.VirtualHost:
    return rc.VirtualHost(
        name=names.virtual_host(virtual_host.service),
        domains=list(virtual_host.authorities),
        routes=[translate_route(route) for route in virtual_host.routes],
    )


def translate_route(route: Route) -> rc.Route:
    out = rc.Route(name=names.route(route), match=route_match(route.match))
    apply_action(out, route)
    if route.fault is not None:
        out.typed_per_filter_config[names.FAULT].CopyFrom(pack(http_fault(route.fault)))
    if route.cors is not None:
        out.typed_per_filter_config[names.CORS].CopyFrom(pack(cors_policy(route.cors)))
    apply_headers(out, route.request_headers, route.response_headers)
    return out
