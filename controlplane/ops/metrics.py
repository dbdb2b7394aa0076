"""Prometheus collectors of policy loading (xDS serving has its own in controlplane/xds/metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RELOADS = Counter(
    "controlplane_reloads_total", "Policy reloads by result (ok, invalid: some file had errors)", ["result"]
)
DIAGNOSTICS = Gauge("controlplane_policy_diagnostics", "Problems found by the last policy load")
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
BUILD_SECONDS = Histogram(
    "controlplane_build_seconds", "Build stage (policy → proxy model), per proxy shape",
    buckets=_STAGE_BUCKETS,
)
TRANSLATE_SECONDS = Histogram(
    "controlplane_translate_seconds", "Translate stage (proxy model → Envoy resources), per proxy shape",
    buckets=_STAGE_BUCKETS,
)
REBUILD_SECONDS = Histogram(
    "controlplane_rebuild_seconds",
    "Time to rebuild every live proxy shape's snapshot after a reload (Istio: pilot_proxy_convergence_time"
    " covers this plus pushing)",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
