"""Endpoints: a model cluster's endpoints as an Envoy ClusterLoadAssignment.

Used twice: as the EDS resource of a STATIC ServiceEntry's cluster, and inline (`Cluster.load_assignment`)
in a STRICT_DNS cluster, where the addresses are hostnames the proxy resolves itself.

Endpoints are grouped by (priority, locality, locality weight) into LocalityLbEndpoints, in that order;
endpoints without locality share one group without a name (model/locality.py sets the rest).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from controlplane.model.proxy_model import Cluster, Endpoint
from controlplane.translate import names
from controlplane.translate.mtls import mark_sidecar_endpoint


def load_assignment(cluster: Cluster) -> endpoint_pb2.ClusterLoadAssignment:
    """The ClusterLoadAssignment for `cluster`, named after it (EDS resources are keyed by cluster name)."""
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=names.outbound_cluster(cluster.ref))
    if cluster.endpoints:
        # An empty assignment has no locality at all: Envoy then answers 503 "no healthy upstream",
        # which is what a service without endpoints should do.
        groups: dict[tuple[int, str, int], list[Endpoint]] = {}
        for endpoint in cluster.endpoints:
            key = (endpoint.priority, endpoint.locality, endpoint.locality_weight or 0)
            groups.setdefault(key, []).append(endpoint)
        for (priority, name, weight), members in sorted(groups.items()):
            group = assignment.endpoints.add()
            if name:
                region, zone, sub_zone = [*name.split("/"), "", ""][:3]
                group.locality.CopyFrom(base_pb2.Locality(region=region, zone=zone, sub_zone=sub_zone))
            if priority:
                group.priority = priority
            if weight:
                group.load_balancing_weight.value = weight
            for endpoint in members:
                _add_lb_endpoint(group, endpoint)
    return assignment


def _add_lb_endpoint(group: endpoint_components_pb2.LocalityLbEndpoints, endpoint: Endpoint) -> None:
    # filled in place: nested constructors copy each submessage into its parent (about 4x slower)
    lb_endpoint = group.lb_endpoints.add()
    socket = lb_endpoint.endpoint.address.socket_address
    socket.SetInParent()  # present even when empty, as the constructor made it
    socket.address = endpoint.address
    socket.port_value = endpoint.port
    if endpoint.weight is not None:
        lb_endpoint.load_balancing_weight.value = endpoint.weight
    if endpoint.health_check_port is not None:
        # A WorkloadGroup probe on another port than the traffic port.
        lb_endpoint.endpoint.health_check_config.port_value = endpoint.health_check_port
    if endpoint.tls_mode:
        mark_sidecar_endpoint(lb_endpoint.metadata)
