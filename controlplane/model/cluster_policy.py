"""Model of what a DestinationRule (and WorkloadGroup probe) does to a cluster: load balancing, connection
limits, outlier detection, retry budget, active health checks. Frozen dataclasses of plain values; `None`
means "not set, Envoy's or Istio's default applies" — translation knows those defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# MeshConfig defaults (istio pkg/config/mesh/mesh.go): connectTimeout 10s, dnsRefreshRate 60s.
DEFAULT_CONNECT_TIMEOUT_MS = 10_000
DEFAULT_DNS_REFRESH_RATE_MS = 60_000


class LbPolicy(StrEnum):
    # Istio's default when a DestinationRule sets no load balancer.
    LEAST_REQUEST = "LEAST_REQUEST"
    ROUND_ROBIN = "ROUND_ROBIN"
    RANDOM = "RANDOM"
    RING_HASH = "RING_HASH"
    MAGLEV = "MAGLEV"


@dataclass(frozen=True)
class HashKey:
    """What a consistent-hash route hashes: exactly one of the fields is set."""

    header: str | None = None
    cookie: str | None = None
    cookie_path: str | None = None
    cookie_ttl_ms: int | None = None
    source_ip: bool = False
    query_parameter: str | None = None


@dataclass(frozen=True)
class LocalitySetting:
    """DestinationRule `localityLbSetting` (see model/locality.py)."""

    enabled: bool = True
    # (from pattern, ((to pattern, weight), ...)), in order.
    distribute: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()
    # (from region, to region), in order.
    failover: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LoadBalancer:
    policy: LbPolicy = LbPolicy.LEAST_REQUEST
    hash_key: HashKey | None = None
    # Istio's default minimum ring size (Envoy's own default is also 1024).
    minimum_ring_size: int | None = None
    maglev_table_size: int | None = None
    # Slow start (ROUND_ROBIN / LEAST_REQUEST only).
    warmup_ms: int | None = None
    locality: LocalitySetting | None = None


@dataclass(frozen=True)
class ConnectionPool:
    """Circuit-breaker thresholds and HTTP connection options; None = unset (Istio: unlimited)."""

    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_requests: int | None = None
    max_retries: int | None = None
    max_requests_per_connection: int | None = None
    idle_timeout_ms: int | None = None
    connect_timeout_ms: int | None = None
    # TCP keepalive (probes, time ms, interval ms; None parts: OS defaults); None: off.
    tcp_keepalive: tuple[int | None, int | None, int | None] | None = None
    # h2UpgradePolicy UPGRADE: HTTP/1.1 service ports use HTTP/2 upstream.
    h2_upgrade: bool = False


@dataclass(frozen=True)
class OutlierDetection:
    consecutive_5xx: int | None = None
    consecutive_gateway_errors: int | None = None
    interval_ms: int | None = None
    base_ejection_time_ms: int | None = None
    max_ejection_percent: int | None = None
    # Istio writes healthy_panic_threshold = minHealthPercent (0 when unset) whenever OD is set.
    min_health_percent: int = 0


@dataclass(frozen=True)
class RetryBudget:
    budget_percent: float | None = None
    min_retry_concurrency: int | None = None


@dataclass(frozen=True)
class ClusterPolicy:
    """A DestinationRule's effect on one cluster, after Istio's subset and port-level merging."""

    load_balancer: LoadBalancer = LoadBalancer()
    connection_pool: ConnectionPool = ConnectionPool()
    outlier_detection: OutlierDetection | None = None
    retry_budget: RetryBudget | None = None


@dataclass(frozen=True)
class HealthCheck:
    """Active health checking from a WorkloadGroup probe (HTTP GET when `http_path` is set, else TCP)."""

    timeout_ms: int
    interval_ms: int
    healthy_threshold: int
    unhealthy_threshold: int
    http_path: str | None = None
    http_host: str | None = None
    http_headers: tuple[tuple[str, str], ...] = ()
