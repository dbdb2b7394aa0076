"""Outlier detection: DestinationRule `outlierDetection` → Cluster `outlier_detection` (Istio's CTP).

- success-rate ejection is always off (`enforcing_success_rate: 0`): Istio exposes consecutive errors only;
- `consecutive5xxErrors` / `consecutiveGatewayErrors` set the counter and enforce it at 100% (0 disables);
- `interval`, `baseEjectionTime`, `maxEjectionPercent` map one to one (Envoy defaults 10s / 30s / 10%);
- `minHealthPercent` → `common_lb_config.healthy_panic_threshold`, written (as 0 when unset) whenever
  outlier detection is configured: with few endpoints Envoy's 50% panic mode would route to ejected hosts.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2

from controlplane.model.cluster_policy import OutlierDetection
from controlplane.translate.protos import duration_ms

_ENFORCE = 100


def apply_outlier_detection(cluster: cluster_pb2.Cluster, outlier: OutlierDetection) -> None:
    out = outlier_detection_pb2.OutlierDetection()
    out.enforcing_success_rate.value = 0
    if outlier.consecutive_5xx is not None:
        out.consecutive_5xx.value = outlier.consecutive_5xx
        out.enforcing_consecutive_5xx.value = _ENFORCE if outlier.consecutive_5xx > 0 else 0
    if outlier.consecutive_gateway_errors is not None:
        out.consecutive_gateway_failure.value = outlier.consecutive_gateway_errors
        out.enforcing_consecutive_gateway_failure.value = (
            _ENFORCE if outlier.consecutive_gateway_errors > 0 else 0
        )
    if outlier.interval_ms is not None:
        out.interval.CopyFrom(duration_ms(outlier.interval_ms))
    if outlier.base_ejection_time_ms is not None:
        out.base_ejection_time.CopyFrom(duration_ms(outlier.base_ejection_time_ms))
    if outlier.max_ejection_percent is not None:
        out.max_ejection_percent.value = outlier.max_ejection_percent
    cluster.outlier_detection.CopyFrom(out)
    cluster.common_lb_config.healthy_panic_threshold.value = outlier.min_health_percent
