"""The inbound listener: traffic for the local app, forwarded to `inbound|<app port>||` clusters.

Mirrors Istio's inbound HTTP path (core/listener_inbound.go, route.go): route configuration with virtual
hosts matching any domain, route timeout 0, and a retry policy that only retries `reset-before-request`
(twice) — safe for any method, since the app never saw the request. Requests whose authority ends in
`:<app port>` for a later app port go to that port; everything else to the first app port.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from controlplane.model.authz import Authz
from controlplane.model.proxy_model import Inbound
from controlplane.model.telemetry import ProxyTelemetry
from controlplane.translate import names
from controlplane.translate.listeners import http_connection_manager, socket_address
from controlplane.translate.mtls import inbound_mtls_context, tls_transport_socket
from controlplane.translate.observability import Direction, apply_observability, listener_traffic_direction
from controlplane.translate.protos import duration_ms, pack
from controlplane.translate.rbac import inbound_filters, rbac_per_route

INBOUND_RETRIES = 2
INBOUND_CONNECT_TIMEOUT_MS = 10_000


def inbound_listener(inbound: Inbound, telemetry: ProxyTelemetry | None = None) -> listener_pb2.Listener:
    """One listener; its filter chains follow the app ports' mTLS modes: an mTLS chain (TLS with a client
    certificate from the mesh) when any port accepts mTLS, a plaintext chain when any accepts plaintext.
    With both (PERMISSIVE), `tls_inspector` tells them apart; STRICT alone leaves a plaintext client no
    chain, so its connection is closed before any HTTP."""
    telemetry = telemetry or ProxyTelemetry()
    mtls_ports = inbound.ports_accepting(mtls=True)
    plain_ports = inbound.ports_accepting(mtls=False)
    listener = listener_pb2.Listener(
        name=names.INBOUND_HTTP_LISTENER,
        address=socket_address(inbound.address.host, inbound.address.port),
        traffic_direction=listener_traffic_direction(Direction.INBOUND),
    )
    if mtls_ports:
        listener.listener_filters.append(listener_components_pb2.ListenerFilter(
            name=names.TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector())))
        manager = _manager(names.INBOUND_HTTP_ROUTE_CONFIG, telemetry, inbound_filters(inbound.authz))
        # The app learns who called: Envoy sets x-forwarded-client-cert to the peer's SPIFFE URI, and drops
        # whatever the caller sent in that header (SANITIZE_SET), so it cannot be forged.
        manager.forward_client_cert_details = hcm.HttpConnectionManager.SANITIZE_SET
        manager.set_current_client_cert_details.uri = True
        chain = _chain(names.INBOUND_MTLS_CHAIN, manager)
        chain.filter_chain_match.transport_protocol = "tls"
        chain.transport_socket.CopyFrom(tls_transport_socket(inbound_mtls_context()))
        listener.filter_chains.append(chain)
    if plain_ports:
        # Identity rules never match here: a plaintext peer has no principal (translate/rbac.py).
        manager = _manager(_plaintext_route_config(inbound), telemetry, inbound_filters(inbound.authz))
        manager.forward_client_cert_details = hcm.HttpConnectionManager.SANITIZE
        chain = _chain(names.INBOUND_PLAINTEXT_CHAIN, manager)
        if mtls_ports:
            chain.filter_chain_match.transport_protocol = "raw_buffer"
        listener.filter_chains.append(chain)
    return listener


def _manager(
    route_config: str, telemetry: ProxyTelemetry, filters: list[hcm.HttpFilter]
) -> hcm.HttpConnectionManager:
    manager = http_connection_manager(names.INBOUND_HTTP_STAT_PREFIX, route_config, filters)
    apply_observability(manager, telemetry, Direction.INBOUND)
    return manager


def _chain(name: str, manager: hcm.HttpConnectionManager) -> listener_components_pb2.FilterChain:
    return listener_components_pb2.FilterChain(name=name, filters=[
        listener_components_pb2.Filter(name=names.HTTP_CONNECTION_MANAGER, typed_config=pack(manager))])


def _plaintext_route_config(inbound: Inbound) -> str:
    mtls_ports = inbound.ports_accepting(mtls=True)
    if not mtls_ports or mtls_ports == inbound.ports_accepting(mtls=False):
        return names.INBOUND_HTTP_ROUTE_CONFIG
    return names.INBOUND_PLAINTEXT_ROUTE_CONFIG


def inbound_clusters(inbound: Inbound) -> list[cluster_pb2.Cluster]:
    clusters = []
    for port in inbound.app_ports:
        name = names.inbound_cluster(port)
        endpoint = endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=socket_address(inbound.app_host, port))
        )
        assignment = endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])],
        )
        clusters.append(
            cluster_pb2.Cluster(
                name=name,
                type=cluster_pb2.Cluster.STATIC,
                connect_timeout=duration_ms(INBOUND_CONNECT_TIMEOUT_MS),
                load_assignment=assignment,
            )
        )
    return clusters


def inbound_route_configs(inbound: Inbound) -> list[route_pb2.RouteConfiguration]:
    """The route table of each filter chain. A table answers for every app port, so that a request for a
    port its chain may not reach (a STRICT port over plaintext) is refused rather than routed to the
    first port."""
    mtls_ports = inbound.ports_accepting(mtls=True)
    plain_ports = inbound.ports_accepting(mtls=False)
    plaintext_name = _plaintext_route_config(inbound)
    configs = []
    if mtls_ports or plaintext_name == names.INBOUND_HTTP_ROUTE_CONFIG:
        allowed = mtls_ports if mtls_ports else plain_ports
        configs.append(_route_config(inbound, names.INBOUND_HTTP_ROUTE_CONFIG, allowed))
    if plaintext_name != names.INBOUND_HTTP_ROUTE_CONFIG:
        configs.append(_route_config(inbound, plaintext_name, plain_ports))
    return configs


def _route_config(inbound: Inbound, name: str, allowed: tuple[int, ...]) -> route_pb2.RouteConfiguration:
    first, *others = inbound.app_ports
    authz = inbound.authz
    virtual_hosts = [_virtual_host(port, [f"*:{port}"], port in allowed, authz) for port in others]
    virtual_hosts.append(_virtual_host(first, ["*"], first in allowed, authz))
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=virtual_hosts)


def _virtual_host(port: int, domains: list[str], allowed: bool, authz: Authz | None) -> rc.VirtualHost:
    if not allowed:
        # PeerAuthentication refuses this transport for this port (STRICT: mTLS only; DISABLE: plaintext)
        refuse = rc.DirectResponseAction(status=403)
        refuse.body.inline_string = "mTLS mode of this port refuses this connection\n"
        route = rc.Route(name=names.DEFAULT_ROUTE, match=rc.RouteMatch(prefix="/"), direct_response=refuse)
        return rc.VirtualHost(name=names.inbound_cluster(port), domains=domains, routes=[route])
    retry = rc.RetryPolicy(retry_on="reset-before-request")
    retry.num_retries.value = INBOUND_RETRIES
    action = rc.RouteAction(cluster=names.inbound_cluster(port), timeout=duration_ms(0), retry_policy=retry)
    route = rc.Route(name=names.DEFAULT_ROUTE, match=rc.RouteMatch(prefix="/"), route=action)
    vhost = rc.VirtualHost(name=names.inbound_cluster(port), domains=domains, routes=[route])
    for name, config in rbac_per_route(authz).items():
        vhost.typed_per_filter_config[name].CopyFrom(pack(config))
    return vhost
