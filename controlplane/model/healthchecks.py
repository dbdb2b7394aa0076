"""WorkloadGroup probes → active health checks on the clusters of the services the group's workloads serve.

Istio runs a WorkloadGroup's `probe` in the VM's agent and reports readiness to istiod. We have neither an
agent nor a kubelet, so the proxies check for themselves: a service's clusters get Envoy active health
checking from the first WorkloadGroup (by name) of the service's namespace whose `metadata.labels` are
included in the labels of at least one of the service's endpoints. Those endpoints are probed on the
probe's port; the cluster's other endpoints are probed on their own port (Envoy checks every host of a
cluster).
"""

from __future__ import annotations

from controlplane.api.common import labels_match
from controlplane.api.policyset import PolicySet
from controlplane.api.workloadentry import ReadinessProbe
from controlplane.model.cluster_policy import HealthCheck
from controlplane.model.services import Service

_SECOND_MS = 1000


def probe_for(
    policy: PolicySet, service: Service
) -> tuple[HealthCheck | None, int | None, dict[str, str] | None]:
    """(health check, probe port, the group's labels) for `service`, or Nones without a matching group."""
    for group in policy.workload_groups():
        probe = group.spec.probe
        if probe is None or group.metadata.namespace != service.namespace:
            continue
        if any(labels_match(group.labels, workload.labels) for workload in service.workloads):
            port = (
                probe.http_get.port if probe.http_get else probe.tcp_socket.port if probe.tcp_socket else None
            )
            return health_check(probe), port, group.labels
    return None, None, None


def health_check(probe: ReadinessProbe) -> HealthCheck:
    http = probe.http_get
    return HealthCheck(
        timeout_ms=probe.timeout_seconds * _SECOND_MS,
        interval_ms=probe.period_seconds * _SECOND_MS,
        healthy_threshold=probe.success_threshold,
        unhealthy_threshold=probe.failure_threshold,
        http_path=http.path if http else None,
        http_host=http.host if http else None,
        http_headers=tuple((h.name, h.value) for h in http.http_headers) if http else (),
    )
