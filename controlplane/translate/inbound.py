"""The inbound listener: traffic for the local app, forwarded to `inbound|<app port>||` clusters.

Mirrors Istio's inbound HTTP path (core/listener_inbound.go, route.go): route configuration with virtual
hosts matching any domain, route timeout 0, and a retry policy that only retries `reset-before-request`
(twice) — safe for any method, since the app never saw the request. Requests whose authority ends in
`:<app port>` for a later app port go to that port; everything else to the first app port.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from controlplane.build.model import Inbound
from controlplane.build.telemetry import ProxyTelemetry
from controlplane.translate import names
from controlplane.translate.listeners import http_connection_manager, http_listener, socket_address
from controlplane.translate.observability import Direction, apply_observability, listener_traffic_direction
from controlplane.translate.protos import duration_ms

INBOUND_RETRIES = 2
INBOUND_CONNECT_TIMEOUT_MS = 10_000


def inbound_listener(inbound: Inbound, telemetry: ProxyTelemetry | None = None) -> listener_pb2.Listener:
    manager = http_connection_manager(names.INBOUND_HTTP_STAT_PREFIX, names.INBOUND_HTTP_ROUTE_CONFIG, [])
    apply_observability(manager, telemetry or ProxyTelemetry(), Direction.INBOUND)
    listener = http_listener(names.INBOUND_HTTP_LISTENER, inbound.address, manager)
    listener.traffic_direction = listener_traffic_direction(Direction.INBOUND)
    return listener


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


def inbound_route_config(inbound: Inbound) -> route_pb2.RouteConfiguration:
    first, *others = inbound.app_ports
    virtual_hosts = [_virtual_host(port, [f"*:{port}"]) for port in others]
    virtual_hosts.append(_virtual_host(first, ["*"]))
    return route_pb2.RouteConfiguration(name=names.INBOUND_HTTP_ROUTE_CONFIG, virtual_hosts=virtual_hosts)


def _virtual_host(port: int, domains: list[str]) -> rc.VirtualHost:
    retry = rc.RetryPolicy(retry_on="reset-before-request")
    retry.num_retries.value = INBOUND_RETRIES
    action = rc.RouteAction(cluster=names.inbound_cluster(port), timeout=duration_ms(0), retry_policy=retry)
    route = rc.Route(name=names.DEFAULT_ROUTE, match=rc.RouteMatch(prefix="/"), route=action)
    return rc.VirtualHost(name=names.inbound_cluster(port), domains=domains, routes=[route])
