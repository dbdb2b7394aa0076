"""Prometheus collectors of policy loading (xDS serving has its own in controlplane/xds/metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RELOADS = Counter(
    "controlplane_reloads_total", "Policy reloads by result (ok, invalid: some file had errors)", ["result"]
)
DIAGNOSTICS = Gauge("controlplane_policy_diagnostics", "Problems found by the last policy load")
REBUILD_SECONDS = Histogram(
    "controlplane_rebuild_seconds",
    "Time to rebuild every live proxy shape's snapshot after a reload (Istio: pilot_proxy_convergence_time"
    " covers this plus pushing)",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
