"""Prometheus collectors of the xDS server (names follow Istio's pilot_xds_* where one exists)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from controlplane.translate.resources import SHORT_NAMES

CONNECTED = Gauge(
    "controlplane_xds_connected_streams", "Open xDS streams (Istio: pilot_xds)", ["protocol", "role"]
)
SUBSCRIBED = Gauge(
    "controlplane_xds_subscribed_streams",
    "Open xDS streams by resource type they subscribe to and proxy role (Istio: pilot_xds by type)",
    ["type", "role"],
)
PUSHES = Counter(
    "controlplane_xds_pushes_total", "xDS responses sent (Istio: pilot_xds_pushes)", ["type"]
)
PUSHED_BYTES = Counter(
    "controlplane_xds_pushed_bytes_total", "Bytes of xDS responses sent (Istio: pilot_xds_config_size_bytes)",
    ["type"],
)
NACKS = Counter(
    "controlplane_xds_nacks_total", "Responses rejected by a proxy (Istio: pilot_total_xds_rejects)", ["type"]
)
BAD_REQUESTS = Counter(
    "controlplane_xds_bad_requests_total", "Requests refused or ignored as malformed", ["reason"]
)
CONVERGENCE = Histogram(
    "controlplane_convergence_seconds",
    "From a policy change being seen to a proxy ACKing every type of the resulting snapshot"
    " (Istio: pilot_proxy_convergence_time)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# Every label value is exported from the start (as 0), so that a dashboard or an alert on
# `rate(controlplane_xds_nacks_total[5m])` sees a series before the first NACK instead of nothing.
BAD_REQUEST_REASONS = ("missing_node", "bad_node", "malformed")
for _reason in BAD_REQUEST_REASONS:
    BAD_REQUESTS.labels(_reason)
for _type in SHORT_NAMES.values():
    NACKS.labels(_type)
