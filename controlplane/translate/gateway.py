"""Gateway listeners: GatewayConfig → listeners `<address>_<port>`, their route tables, SDS secrets and the
readiness listener.

Filter chains (one per model chain): `server_names` from SNI, TLS termination from translate/tls.py, then
either an HTTP connection manager reading its route table over RDS or a tcp_proxy. TLS listeners get the
`tls_inspector` so that chains can match the SNI (and passthrough chains never decrypt anything).

The gateway HTTP connection manager follows Istio's gateway settings: `use_remote_address: true` with no
trusted hops (the client address is the TCP peer's; it feeds x-forwarded-for and the per-IP rate limit),
`forward_client_cert_details: SANITIZE_SET`. HTTP filters: fault, cors, [local_ratelimit], router — CORS
before the rate limit so that even a 429 carries CORS headers a browser can read. Tracing and access logs
come from the shared observability hook, as on sidecars.

The readiness listener (`/healthz/ready` → 200 on the proxy's health address) arrives over LDS like every
other listener; until Envoy has its configuration nothing listens there, which is what "ready" means for
a load balancer or `docker compose` health check in front of the gateway.
"""

from __future__ import annotations

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf.message import Message

from controlplane.model.gatewaymodel import GatewayChain, GatewayConfig, GatewayListener
from controlplane.model.identity import SocketAddress
from controlplane.model.routemodel import DirectResponse
from controlplane.model.telemetry import ProxyTelemetry
from controlplane.translate import names
from controlplane.translate.gateway_routes import gateway_route_config, route_table_name
from controlplane.translate.listeners import http_connection_manager, socket_address
from controlplane.translate.observability import Direction, apply_observability, listener_traffic_direction
from controlplane.translate.protos import pack
from controlplane.translate.ratelimit import local_rate_limit
from controlplane.translate.rbac import authz_filters
from controlplane.translate.rbac_tcp import tcp_filters
from controlplane.translate.resources import LISTENER, ROUTE, SECRET
from controlplane.translate.route_action import direct_response
from controlplane.translate.secrets import credential_secrets
from controlplane.translate.tls import downstream_transport_socket


def gateway_resources(gateway: GatewayConfig, telemetry: ProxyTelemetry) -> list[tuple[str, str, Message]]:
    """(type URL, name, message) of every listener, route table and secret of the gateway."""
    out: list[tuple[str, str, Message]] = []
    for credential in gateway.credentials:
        out.extend((SECRET, secret.name, secret) for secret in credential_secrets(credential))
    for listener in gateway.listeners:
        out.append(
            (
                LISTENER,
                names.tcp_listener(listener.address, listener.port),
                _listener(gateway, listener, telemetry),
            )
        )
        for chain in listener.chains:
            if chain.routes is not None:
                out.append((ROUTE, route_table_name(chain.routes), gateway_route_config(chain.routes)))
    if gateway.health is not None:
        health = gateway.health
        out.append((LISTENER, names.tcp_listener(health.host, health.port), health_listener(health)))
    return out


def _listener(
    gateway: GatewayConfig, listener: GatewayListener, telemetry: ProxyTelemetry
) -> listener_pb2.Listener:
    name = names.tcp_listener(listener.address, listener.port)
    out = listener_pb2.Listener(
        name=name,
        address=socket_address(listener.address, listener.port),
        filter_chains=[_chain(gateway, name, chain, telemetry) for chain in listener.chains],
        traffic_direction=listener_traffic_direction(Direction.GATEWAY),
    )
    if listener.inspects_tls:
        out.listener_filters.append(
            listener_components_pb2.ListenerFilter(
                name=names.TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector())
            )
        )
    return out


def _chain(
    gateway: GatewayConfig, listener: str, chain: GatewayChain, telemetry: ProxyTelemetry
) -> listener_components_pb2.FilterChain:
    if chain.routes is not None:
        manager = gateway_connection_manager(gateway, listener, route_table_name(chain.routes))
        apply_observability(manager, telemetry, Direction.GATEWAY)
        network_filter = listener_components_pb2.Filter(
            name=names.HTTP_CONNECTION_MANAGER, typed_config=pack(manager)
        )
    else:
        network_filter = listener_components_pb2.Filter(
            name=names.TCP_PROXY, typed_config=pack(_tcp_proxy(chain))
        )
    # on TCP chains the HTTP RBAC filters never run: network RBAC closes denied connections instead
    before = tcp_filters(gateway.authz, listener) if chain.routes is None else []
    out = listener_components_pb2.FilterChain(filters=[*before, network_filter])
    if chain.server_names:
        out.filter_chain_match.server_names.extend(chain.server_names)
    if chain.tls is not None:
        out.transport_socket.CopyFrom(downstream_transport_socket(chain.tls))
    return out


def gateway_connection_manager(
    gateway: GatewayConfig, stat_prefix: str, route_config: str
) -> hcm.HttpConnectionManager:
    filters = [
        hcm.HttpFilter(name=names.FAULT, typed_config=pack(fault_pb2.HTTPFault())),
        hcm.HttpFilter(name=names.CORS, typed_config=pack(cors_pb2.Cors())),
    ]
    if gateway.rate_limits:
        filters.append(
            hcm.HttpFilter(
                name=names.LOCAL_RATELIMIT, typed_config=pack(local_rate_limit(gateway.rate_limits))
            )
        )
    # identity rules match only on chains whose clients present a mesh certificate (ISTIO_MUTUAL servers)
    filters += authz_filters(gateway.authz)
    manager = http_connection_manager(stat_prefix, route_config, filters)
    manager.use_remote_address.value = True
    manager.xff_num_trusted_hops = 0
    manager.forward_client_cert_details = hcm.HttpConnectionManager.SANITIZE_SET
    return manager


def _tcp_proxy(chain: GatewayChain) -> tcp_proxy_pb2.TcpProxy:
    first = names.outbound_cluster(chain.tcp[0].cluster)
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=first)
    if len(chain.tcp) == 1:
        proxy.cluster = first
    else:
        for weighted in chain.tcp:
            proxy.weighted_clusters.clusters.add(
                name=names.outbound_cluster(weighted.cluster), weight=weighted.weight
            )
    return proxy


def health_listener(address: SocketAddress) -> listener_pb2.Listener:
    ready = rc.Route(
        match=rc.RouteMatch(path=names.GATEWAY_HEALTH_PATH),
        direct_response=direct_response(DirectResponse(200, "ready\n")),
    )
    table = route_pb2.RouteConfiguration(
        name=names.GATEWAY_HEALTH_ROUTE_CONFIG,
        virtual_hosts=[rc.VirtualHost(name=names.GATEWAY_HEALTH_ROUTE_CONFIG, domains=["*"], routes=[ready])],
    )
    manager = hcm.HttpConnectionManager(
        stat_prefix=names.GATEWAY_HEALTH_ROUTE_CONFIG,
        # Inline: readiness must not depend on one more RDS round trip.
        route_config=table,
        http_filters=[hcm.HttpFilter(name=names.ROUTER, typed_config=pack(router_pb2.Router()))],
    )
    chain = listener_components_pb2.FilterChain(
        filters=[
            listener_components_pb2.Filter(name=names.HTTP_CONNECTION_MANAGER, typed_config=pack(manager))
        ]
    )
    return listener_pb2.Listener(
        name=names.tcp_listener(address.host, address.port),
        address=socket_address(address.host, address.port),
        filter_chains=[chain],
    )
