"""Outbound traffic policy: what the sidecar's HTTP proxy does with an authority no service answers.

Istio: ALLOW_ANY sends such traffic to `PassthroughCluster` (ORIGINAL_DST: the address the app dialled
before iptables redirected it); REGISTRY_ONLY answers 502 from a `block_all` virtual host.

Our outbound listener is an explicit HTTP proxy: the app dials the proxy itself, so the original
destination is the proxy — ORIGINAL_DST would loop. What identifies the destination is the request's
authority, so ALLOW_ANY uses Envoy's dynamic forward proxy: `PassthroughCluster` is a
`envoy.clusters.dynamic_forward_proxy` cluster and the `dynamic_forward_proxy` HTTP filter resolves the
authority's host by DNS (port 80 when the authority has none). The filter only acts on routes to that
cluster. Unresolvable hosts get 503 (`dns_resolution_failure`).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.clusters.dynamic_forward_proxy.v3 import cluster_pb2 as dfp_cluster_pb2
from envoy.extensions.common.dynamic_forward_proxy.v3 import dns_cache_pb2
from envoy.extensions.filters.http.dynamic_forward_proxy.v3 import dynamic_forward_proxy_pb2 as dfp_filter_pb2

from controlplane.model.routemodel import DirectResponse
from controlplane.translate import names
from controlplane.translate.protos import duration_ms, pack
from controlplane.translate.route_action import direct_response

# Istio's answer for an unregistered host under REGISTRY_ONLY.
REGISTRY_ONLY_STATUS = 502


def dns_cache() -> dns_cache_pb2.DnsCacheConfig:
    # Must be identical in the filter and the cluster: Envoy shares one cache per name and rejects a
    # second definition that differs.
    return dns_cache_pb2.DnsCacheConfig(
        name=names.PASSTHROUGH_DNS_CACHE, dns_lookup_family=cluster_pb2.Cluster.V4_PREFERRED
    )


def passthrough_cluster(connect_timeout_ms: int) -> cluster_pb2.Cluster:
    config = dfp_cluster_pb2.ClusterConfig(dns_cache_config=dns_cache())
    return cluster_pb2.Cluster(
        name=names.PASSTHROUGH_CLUSTER,
        connect_timeout=duration_ms(connect_timeout_ms),
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        cluster_type=cluster_pb2.Cluster.CustomClusterType(
            name=names.DYNAMIC_FORWARD_PROXY_CLUSTER, typed_config=pack(config)
        ),
    )


def dynamic_forward_proxy_filter() -> dfp_filter_pb2.FilterConfig:
    return dfp_filter_pb2.FilterConfig(dns_cache_config=dns_cache())


def catch_all_virtual_host(allow_any: bool) -> rc.VirtualHost:
    if allow_any:
        action = rc.Route(
            name=names.ALLOW_ANY,
            match=rc.RouteMatch(prefix="/"),
            route=rc.RouteAction(cluster=names.PASSTHROUGH_CLUSTER, timeout=duration_ms(0)),
        )
        return rc.VirtualHost(name=names.ALLOW_ANY, domains=["*"], routes=[action])
    block = rc.Route(
        name=names.BLOCK_ALL,
        match=rc.RouteMatch(prefix="/"),
        direct_response=direct_response(DirectResponse(REGISTRY_ONLY_STATUS)),
    )
    return rc.VirtualHost(name=names.BLOCK_ALL, domains=["*"], routes=[block])
