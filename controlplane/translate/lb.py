"""Load balancing: DestinationRule `loadBalancer` → Cluster `lb_policy` and its per-policy config.

- simple ROUND_ROBIN / LEAST_REQUEST / RANDOM → the same lb_policy (LEAST_REQUEST is Istio's default);
- consistentHash → RING_HASH (`minimum_ring_size`, Istio's default 1024) or MAGLEV (`table_size`); the
  hash key itself is a route `hash_policy` (translate/route_action.py);
- warmupDurationSecs → `slow_start_config.slow_start_window` on round_robin / least_request config.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2

from controlplane.model.cluster_policy import LbPolicy, LoadBalancer
from controlplane.translate.protos import duration_ms

_LB_POLICIES = {
    LbPolicy.LEAST_REQUEST: cluster_pb2.Cluster.LEAST_REQUEST,
    LbPolicy.ROUND_ROBIN: cluster_pb2.Cluster.ROUND_ROBIN,
    LbPolicy.RANDOM: cluster_pb2.Cluster.RANDOM,
    LbPolicy.RING_HASH: cluster_pb2.Cluster.RING_HASH,
    LbPolicy.MAGLEV: cluster_pb2.Cluster.MAGLEV,
}


def apply_load_balancer(cluster: cluster_pb2.Cluster, lb: LoadBalancer) -> None:
    cluster.lb_policy = _LB_POLICIES[lb.policy]
    if lb.policy is LbPolicy.RING_HASH and lb.minimum_ring_size is not None:
        cluster.ring_hash_lb_config.minimum_ring_size.value = lb.minimum_ring_size
    if lb.policy is LbPolicy.MAGLEV and lb.maglev_table_size is not None:
        cluster.maglev_lb_config.table_size.value = lb.maglev_table_size
    if lb.warmup_ms is not None:
        window = duration_ms(lb.warmup_ms)
        if lb.policy is LbPolicy.ROUND_ROBIN:
            cluster.round_robin_lb_config.slow_start_config.slow_start_window.CopyFrom(window)
        elif lb.policy is LbPolicy.LEAST_REQUEST:
            cluster.least_request_lb_config.slow_start_config.slow_start_window.CopyFrom(window)
