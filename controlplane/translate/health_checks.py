"""Active health checking: a WorkloadGroup probe → Cluster `health_checks` (one HTTP or TCP check).

Kubernetes semantics carried over: `periodSeconds` → interval, `timeoutSeconds` → timeout,
`successThreshold` / `failureThreshold` → healthy / unhealthy thresholds. `no_traffic_interval` is set to
the same interval: Envoy's default (60s) would slow checks down on an idle cluster, whereas a kubelet
probes at the same rate whether or not traffic flows. The probe port is set per endpoint
(`health_check_config.port_value`, translate/endpoints.py).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2, health_check_pb2

from controlplane.model.cluster_policy import HealthCheck
from controlplane.translate.protos import duration_ms


def health_check(check: HealthCheck) -> health_check_pb2.HealthCheck:
    out = health_check_pb2.HealthCheck(
        timeout=duration_ms(check.timeout_ms),
        interval=duration_ms(check.interval_ms),
        no_traffic_interval=duration_ms(check.interval_ms),
    )
    out.healthy_threshold.value = check.healthy_threshold
    out.unhealthy_threshold.value = check.unhealthy_threshold
    if check.http_path is not None:
        http = out.http_health_check
        http.path = check.http_path
        if check.http_host:
            http.host = check.http_host
        for name, value in check.http_headers:
            http.request_headers_to_add.append(
                base_pb2.HeaderValueOption(
                    header=base_pb2.HeaderValue(key=name, value=value),
                    append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                )
            )
    else:
        out.tcp_health_check.SetInParent()
    return out
