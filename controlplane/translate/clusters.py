"""Clusters: one Envoy Cluster per model cluster (a service port).

- EDS (ServiceEntry STATIC): endpoints arrive as a ClusterLoadAssignment over the same ADS stream;
- STRICT_DNS (ServiceEntry DNS): the load assignment is inline and Envoy resolves the hostnames itself,
  every `dns_refresh_rate` or sooner when the DNS TTL says so.

HTTP/2 upstreams (ports declared HTTP2 or GRPC) need explicit protocol options: Envoy speaks HTTP/1.1 to
upstreams unless told otherwise, and a gRPC server would refuse it.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2

from controlplane.build.model import Cluster, Discovery, LbPolicy, UpstreamProtocol
from controlplane.translate import names
from controlplane.translate.ads import ads_config_source
from controlplane.translate.endpoints import load_assignment

_LB_POLICIES = {
    LbPolicy.LEAST_REQUEST: cluster_pb2.Cluster.LEAST_REQUEST,
    LbPolicy.ROUND_ROBIN: cluster_pb2.Cluster.ROUND_ROBIN,
    LbPolicy.RANDOM: cluster_pb2.Cluster.RANDOM,
}


def translate_cluster(cluster: Cluster) -> cluster_pb2.Cluster:
    out = cluster_pb2.Cluster(
        name=names.outbound_cluster(cluster.ref),
        connect_timeout=_duration_ms(cluster.connect_timeout_ms),
        lb_policy=_LB_POLICIES[cluster.lb_policy],
    )
    if cluster.discovery is Discovery.EDS:
        out.type = cluster_pb2.Cluster.EDS
        # No service_name: the EDS resource is named after the cluster.
        out.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
    else:
        out.type = cluster_pb2.Cluster.STRICT_DNS
        out.dns_refresh_rate.CopyFrom(_duration_ms(cluster.dns_refresh_rate_ms))
        out.respect_dns_ttl = cluster.respect_dns_ttl
        out.load_assignment.CopyFrom(load_assignment(cluster))
    if cluster.protocol is UpstreamProtocol.HTTP2:
        out.typed_extension_protocol_options[names.HTTP_PROTOCOL_OPTIONS].CopyFrom(_http2_options())
    return out


def _http2_options() -> any_pb2.Any:
    options = http_protocol_options_pb2.HttpProtocolOptions()
    options.explicit_http_config.http2_protocol_options.SetInParent()
    packed = any_pb2.Any()
    packed.Pack(options)
    return packed


def _duration_ms(milliseconds: int) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(milliseconds)
    return duration
