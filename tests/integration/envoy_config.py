"""Hand-built Envoy resources for the protocol tests: EDS clusters with their ClusterLoadAssignments, one
listener reading its routes over RDS, and the RouteConfiguration that routes to the clusters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from controlplane.model.identity import ProxyIdentity
from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, Resources
from controlplane.xds.cache import ResourceFactory

LISTENER_NAME = "outbound"
ROUTE_NAME = "outbound-routes"

MESSAGE_TYPES: dict[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
}


def eds_cluster(name: str, timeout_ms: int = 1000, *, padding: str = "") -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    cluster.connect_timeout.FromMilliseconds(timeout_ms)
    cluster.eds_cluster_config.eds_config.ads.SetInParent()
    cluster.eds_cluster_config.eds_config.resource_api_version = config_source_pb2.V3
    if padding:
        cluster.metadata.filter_metadata["test"].update({"padding": padding})
    return cluster


def static_cluster(name: str, timeout_ms: int = 1000, *, padding: str = "") -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC)
    cluster.connect_timeout.FromMilliseconds(timeout_ms)
    if padding:
        cluster.metadata.filter_metadata["test"].update({"padding": padding})
    return cluster


def load_assignment(name: str, port: int) -> endpoint_pb2.ClusterLoadAssignment:
    endpoint = endpoint_components_pb2.LbEndpoint()
    endpoint.endpoint.address.socket_address.address = "127.0.0.1"
    endpoint.endpoint.address.socket_address.port_value = port
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name, endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])]
    )


def rds_listener(name: str = LISTENER_NAME, route_name: str = ROUTE_NAME,
                 port: int = 15001) -> listener_pb2.Listener:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=name)
    hcm.rds.route_config_name = route_name
    hcm.rds.config_source.ads.SetInParent()
    hcm.rds.config_source.resource_api_version = config_source_pb2.V3
    typed = any_pb2.Any()
    typed.Pack(hcm)
    listener = listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port)
        ),
    )
    listener.filter_chains.append(
        listener_components_pb2.FilterChain(
            filters=[listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager",
                                                    typed_config=typed)]
        )
    )
    return listener


def route_config(name: str, clusters: Sequence[str]) -> route_pb2.RouteConfiguration:
    host = route_components_pb2.VirtualHost(name="all", domains=["*"])
    for cluster in clusters:
        route = host.routes.add()
        route.match.prefix = f"/{cluster}"
        route.route.cluster = cluster
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[host])


def mesh(
    services: Mapping[str, int],
    *,
    routed: Sequence[str] | None = None,
    timeouts: Mapping[str, int] | None = None,
    listener_port: int = 15001,
    extra_clusters: Sequence[cluster_pb2.Cluster] = (),
) -> Resources:
    """One EDS cluster and ClusterLoadAssignment per service (name -> endpoint port), one listener with an
    RDS route configuration routing to `routed` (default: every service)."""
    resources = Resources()
    for name, port in services.items():
        resources.add(CLUSTER, name, eds_cluster(name, (timeouts or {}).get(name, 1000)))
        resources.add(ENDPOINT, name, load_assignment(name, port))
    for cluster in extra_clusters:
        resources.add(CLUSTER, cluster.name, cluster)
    resources.add(LISTENER, LISTENER_NAME, rds_listener(port=listener_port))
    resources.add(ROUTE, ROUTE_NAME, route_config(ROUTE_NAME, sorted(services) if routed is None else routed))
    return resources


def clusters_only(*clusters: cluster_pb2.Cluster) -> Resources:
    resources = Resources()
    for cluster in clusters:
        resources.add(CLUSTER, cluster.name, cluster)
    return resources


def constant(resources: Resources) -> ResourceFactory:
    """A factory that gives every proxy shape the same resources."""

    def factory(identity: ProxyIdentity) -> Resources:
        return resources

    return factory


def unpack(any_message: any_pb2.Any) -> Message:
    message = MESSAGE_TYPES[any_message.type_url]()
    assert any_message.Unpack(message), any_message.type_url
    return message


def resource_name(message: Message) -> str:
    if isinstance(message, endpoint_pb2.ClusterLoadAssignment):
        return str(message.cluster_name)
    return str(message.name)
