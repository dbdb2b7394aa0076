"""Listeners: the sidecar's outbound HTTP listener (its applications' HTTP proxy) and the HTTP filter chain.

One listener at the proxy's `outbound_address` with a single HTTP connection manager. Routes come over
RDS on the ADS stream (one route configuration, `names.OUTBOUND_HTTP_ROUTE_CONFIG`), so route changes
never drain the listener's connections the way a listener update would.

Applications reach services through it either as an explicit HTTP proxy (`HTTP_PROXY`, requests in
absolute form `GET http://host:port/path`) or by sending plain requests with `Host: host[:port]`; in both
cases Envoy routes on the resulting `:authority`.

HTTP filters, in Istio's order (core/listener_builder.go): fault, cors, [dynamic_forward_proxy for
ALLOW_ANY], router. Fault and CORS are always present with empty configs so that a route gaining a fault
or CORS policy is a route update only; they act only on routes with a per-route config.

Tracing and access logs: every HTTP connection manager goes through `observability.apply_observability`
(the one hook for all of them, gateways included).
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from controlplane.model.identity import SocketAddress
from controlplane.model.proxy_model import OutboundHttp, OutboundPolicy
from controlplane.model.telemetry import ProxyTelemetry
from controlplane.translate import names
from controlplane.translate.ads import ads_config_source
from controlplane.translate.observability import Direction, apply_observability, listener_traffic_direction
from controlplane.translate.passthrough import dynamic_forward_proxy_filter
from controlplane.translate.protos import pack


def outbound_http_listener(
    outbound: OutboundHttp, telemetry: ProxyTelemetry | None = None
) -> listener_pb2.Listener:
    filters = [
        hcm.HttpFilter(name=names.FAULT, typed_config=pack(fault_pb2.HTTPFault())),
        hcm.HttpFilter(name=names.CORS, typed_config=pack(cors_pb2.Cors())),
    ]
    if outbound.outbound_policy is OutboundPolicy.ALLOW_ANY or outbound.forwards_by_authority:
        filters.append(
            hcm.HttpFilter(
                name=names.DYNAMIC_FORWARD_PROXY, typed_config=pack(dynamic_forward_proxy_filter())
            )
        )
    manager = http_connection_manager(
        names.OUTBOUND_HTTP_STAT_PREFIX, names.OUTBOUND_HTTP_ROUTE_CONFIG, filters
    )
    # Explicit-proxy clients send absolute-form request lines; say so rather than rely on Envoy's default.
    manager.http_protocol_options.allow_absolute_url.value = True
    apply_observability(manager, telemetry or ProxyTelemetry(), Direction.OUTBOUND)
    listener = http_listener(names.OUTBOUND_HTTP_LISTENER, outbound.address, manager)
    listener.traffic_direction = listener_traffic_direction(Direction.OUTBOUND)
    return listener


def http_connection_manager(
    stat_prefix: str, route_config: str, filters: list[hcm.HttpFilter]
) -> hcm.HttpConnectionManager:
    return hcm.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm.HttpConnectionManager.AUTO,
        rds=hcm.Rds(config_source=ads_config_source(), route_config_name=route_config),
        http_filters=[*filters, hcm.HttpFilter(name=names.ROUTER, typed_config=pack(router_pb2.Router()))],
    )


def http_listener(
    name: str, address: SocketAddress, manager: hcm.HttpConnectionManager
) -> listener_pb2.Listener:
    chain = listener_components_pb2.FilterChain(
        filters=[
            listener_components_pb2.Filter(name=names.HTTP_CONNECTION_MANAGER, typed_config=pack(manager))
        ]
    )
    return listener_pb2.Listener(
        name=name,
        address=socket_address(address.host, address.port),
        filter_chains=[chain],
    )


def socket_address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))
