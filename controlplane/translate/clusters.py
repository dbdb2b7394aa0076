"""Clusters: one Envoy Cluster per model cluster (a service port, or a port and a subset).

- EDS (ServiceEntry STATIC): endpoints arrive as a ClusterLoadAssignment over the same ADS stream;
- STRICT_DNS (ServiceEntry DNS): the load assignment is inline and Envoy resolves the hostnames itself,
  every `dns_refresh_rate` or sooner when the DNS TTL says so.

Policy parts live in their own modules: `lb`, `circuit_breakers`, `outlier`, `health_checks`. HTTP
upstream options (HTTP/2 for HTTP2/GRPC ports — Envoy speaks HTTP/1.1 unless told otherwise and a gRPC
server would refuse it —, maxRequestsPerConnection, idleTimeout) go into `HttpProtocolOptions`.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.clusters.dynamic_forward_proxy.v3 import cluster_pb2 as dfp_cluster_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from controlplane.model.cluster_policy import ConnectionPool
from controlplane.model.proxy_model import Cluster, Discovery, UpstreamProtocol
from controlplane.translate import names
from controlplane.translate.ads import ads_config_source
from controlplane.translate.circuit_breakers import circuit_breakers
from controlplane.translate.endpoints import load_assignment
from controlplane.translate.health_checks import health_check
from controlplane.translate.lb import apply_load_balancer
from controlplane.translate.mtls import apply_upstream_tls
from controlplane.translate.outlier import apply_outlier_detection
from controlplane.translate.passthrough import dns_cache
from controlplane.translate.protos import duration_ms, pack


def translate_cluster(cluster: Cluster) -> cluster_pb2.Cluster:
    out = cluster_pb2.Cluster(
        name=names.outbound_cluster(cluster.ref),
        connect_timeout=duration_ms(cluster.connect_timeout_ms),
    )
    dynamic = cluster.discovery is Discovery.DYNAMIC_FORWARD_PROXY
    if cluster.discovery is Discovery.EDS:
        out.type = cluster_pb2.Cluster.EDS
        # No service_name: the EDS resource is named after the cluster.
        out.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
    elif dynamic:
        # Shares the outbound listener's DNS cache (translate/passthrough.py); the cluster picks the host.
        config = dfp_cluster_pb2.ClusterConfig(dns_cache_config=dns_cache())
        custom = cluster_pb2.Cluster.CustomClusterType(
            name=names.DYNAMIC_FORWARD_PROXY_CLUSTER, typed_config=pack(config)
        )
        out.cluster_type.CopyFrom(custom)
    else:
        out.type = cluster_pb2.Cluster.STRICT_DNS
        out.dns_refresh_rate.CopyFrom(duration_ms(cluster.dns_refresh_rate_ms))
        out.respect_dns_ttl = cluster.respect_dns_ttl
        # Envoy's default (AUTO) prefers IPv6 and resolves "localhost" to [::1] even where only 127.0.0.1
        # listens; Istio uses V4_ONLY on IPv4 hosts. V4_PREFERRED keeps IPv6-only names working.
        out.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
        out.load_assignment.CopyFrom(load_assignment(cluster))
    policy = cluster.policy
    if dynamic:
        out.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED  # Envoy requires it for this cluster type
    else:
        apply_load_balancer(out, policy.load_balancer)
    out.circuit_breakers.CopyFrom(circuit_breakers(policy))
    if policy.outlier_detection is not None:
        apply_outlier_detection(out, policy.outlier_detection)
    keepalive = policy.connection_pool.tcp_keepalive
    if keepalive is not None:
        probes, time_ms, interval_ms = keepalive
        options = out.upstream_connection_options.tcp_keepalive
        options.SetInParent()
        if probes is not None:
            options.keepalive_probes.value = probes
        if time_ms is not None:
            options.keepalive_time.value = max(1, time_ms // 1000)  # Envoy counts whole seconds
        if interval_ms is not None:
            options.keepalive_interval.value = max(1, interval_ms // 1000)
    if cluster.locality_weighted:
        out.common_lb_config.locality_weighted_lb_config.SetInParent()
    if cluster.health_check is not None:
        out.health_checks.append(health_check(cluster.health_check))
    apply_upstream_tls(out, cluster)
    options = _http_options(cluster.protocol, policy.connection_pool)
    if options is not None:
        out.typed_extension_protocol_options[names.HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(options))
    return out


def _http_options(
    protocol: UpstreamProtocol, pool: ConnectionPool
) -> http_protocol_options_pb2.HttpProtocolOptions | None:
    tuned = pool.max_requests_per_connection is not None or pool.idle_timeout_ms is not None
    if protocol is UpstreamProtocol.TCP or (protocol is UpstreamProtocol.HTTP1 and not tuned):
        return None
    options = http_protocol_options_pb2.HttpProtocolOptions()
    if protocol is UpstreamProtocol.HTTP2:
        options.explicit_http_config.http2_protocol_options.SetInParent()
    else:
        options.explicit_http_config.http_protocol_options.SetInParent()
    common = options.common_http_protocol_options
    if pool.max_requests_per_connection is not None:
        common.max_requests_per_connection.value = pool.max_requests_per_connection
    if pool.idle_timeout_ms is not None:
        common.idle_timeout.CopyFrom(duration_ms(pool.idle_timeout_ms))
    return options
