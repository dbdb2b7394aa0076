"""The Prometheus scrape endpoint of an Envoy: Istio's `:15090/stats/prometheus`, as bootstrap resources.

Envoy's admin interface serves `/stats/prometheus` itself, but the admin interface also serves
`/quitquitquit`, `/config_dump` and runtime changes, so it stays on the loopback (127.0.0.1:15000). For
Prometheus (another container, another host) Istio adds a static listener on 15090 that exposes just that
one path, proxied to the admin interface through a static cluster; `controlplane bootstrap
--prometheus-address 0.0.0.0:15090` adds the same two resources. They are static (bootstrap), not xDS:
metrics must stay reachable while the control plane is down.

    GET http://<proxy>:15090/stats/prometheus   → admin /stats/prometheus
    anything else                               → 404
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import any_pb2
from google.protobuf.message import Message

from controlplane.model.identity import SocketAddress

# Istio's names for the listener's cluster and stat prefix.
PROMETHEUS_CLUSTER = "prometheus_stats"
PROMETHEUS_LISTENER = "prometheus_stats"
PROMETHEUS_PATH = "/stats/prometheus"
DEFAULT_PROMETHEUS_PORT = 15090


def _address(address: SocketAddress) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address.host, port_value=address.port)
    )


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def prometheus_cluster(admin: SocketAddress) -> cluster_pb2.Cluster:
    """A STATIC cluster pointing at the proxy's own admin interface."""
    endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=_address(admin))
    )
    cluster = cluster_pb2.Cluster(
        name=PROMETHEUS_CLUSTER,
        type=cluster_pb2.Cluster.STATIC,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=PROMETHEUS_CLUSTER,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])],
        ),
    )
    cluster.connect_timeout.FromSeconds(1)
    return cluster


def prometheus_listener(listen: SocketAddress) -> listener_pb2.Listener:
    """A listener that answers `/stats/prometheus` (and only that) from the admin interface."""
    route = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix=PROMETHEUS_PATH),
        route=route_components_pb2.RouteAction(cluster=PROMETHEUS_CLUSTER),
    )
    manager = hcm.HttpConnectionManager(
        stat_prefix=PROMETHEUS_LISTENER,
        codec_type=hcm.HttpConnectionManager.AUTO,
        route_config=route_pb2.RouteConfiguration(
            name=PROMETHEUS_LISTENER,
            virtual_hosts=[route_components_pb2.VirtualHost(name="stats", domains=["*"], routes=[route])],
        ),
        http_filters=[
            hcm.HttpFilter(name="envoy.filters.http.router", typed_config=_pack(router_pb2.Router()))
        ],
    )
    chain = listener_components_pb2.FilterChain(
        filters=[
            listener_components_pb2.Filter(
                name="envoy.filters.network.http_connection_manager", typed_config=_pack(manager)
            )
        ]
    )
    return listener_pb2.Listener(name=PROMETHEUS_LISTENER, address=_address(listen), filter_chains=[chain])
