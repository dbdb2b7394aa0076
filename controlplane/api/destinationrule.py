"""DestinationRule (networking.istio.io): what happens to traffic for a service after routing.

Mirrors istio/api `networking/v1/destination_rule.proto`. Supported: `host`, `subsets[]` (name, labels,
trafficPolicy), and `trafficPolicy` with `loadBalancer` (simple; consistentHash on httpHeaderName,
httpCookie, useSourceIp, httpQueryParameterName with ringHash or maglev; warmupDurationSecs),
`connectionPool` (tcp maxConnections, connectTimeout; http http1MaxPendingRequests, http2MaxRequests,
maxRequestsPerConnection, maxRetries, idleTimeout), `outlierDetection` (consecutive5xxErrors,
consecutiveGatewayErrors, interval, baseEjectionTime, maxEjectionPercent, minHealthPercent),
`retryBudget` (percent, minRetryConcurrency), `tls` (api/clienttls.py), `loadBalancer.localityLbSetting`
(enabled, distribute, failover; see model/locality.py) and `portLevelSettings`; `workloadSelector` (the rule
applies to those workloads of its namespace only) and wildcard hosts. `exportTo`, `failoverPriority` and the
rest are "unsupported field".
See https://istio.io/latest/docs/reference/config/networking/destination-rule/.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, model_validator

from controlplane.api.clienttls import ClientTLSSettings
from controlplane.api.common import (
    DurationMs,
    LocalityPattern,
    PortSelector,
    PositiveDurationMs,
    PositiveInt32,
    UInt32,
)
from controlplane.api.meta import ExportTarget, HostPattern, IstioModel, PolicyObject, Problem, duplicates

# LEAST_CONN is Istio's deprecated spelling of LEAST_REQUEST; PASSTHROUGH needs original-destination
# routing, which an HTTP-proxy sidecar does not have (see docs/compatibility.md).
SimpleLB = Literal["UNSPECIFIED", "LEAST_CONN", "LEAST_REQUEST", "ROUND_ROBIN", "RANDOM"]


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class HTTPCookie(IstioModel):
    name: str = Field(min_length=1)
    path: str | None = None
    # Istio requires a ttl; 0s means a session cookie.
    ttl: DurationMs | None = None


class RingHash(IstioModel):
    minimum_ring_size: Annotated[int, Field(ge=1, le=8_388_608)] | None = None


class Maglev(IstioModel):
    # Envoy requires a prime table size.
    table_size: Annotated[int, Field(ge=1, le=5_000_011)] | None = None


class ConsistentHash(IstioModel):
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: Maglev | None = None
    # Deprecated in Istio in favour of ringHash.minimumRingSize; still common in existing YAML.
    minimum_ring_size: Annotated[int, Field(ge=1, le=8_388_608)] | None = None

    @model_validator(mode="after")
    def _one_key(self) -> ConsistentHash:
        keys = [
            k
            for k, v in (
                ("httpHeaderName", self.http_header_name),
                ("httpCookie", self.http_cookie),
                ("useSourceIp", self.use_source_ip),
                ("httpQueryParameterName", self.http_query_parameter_name),
            )
            if v
        ]
        if len(keys) != 1:
            raise ValueError(f"exactly one hash key must be set (got {', '.join(keys) or 'none'})")
        if self.ring_hash is not None and self.maglev is not None:
            raise ValueError("only one of ringHash, maglev may be set")
        size = self.maglev.table_size if self.maglev is not None else None
        if size is not None and not _is_prime(size):
            raise ValueError(f"maglev.tableSize must be a prime number, got {size}")
        return self


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


class LocalityDistribute(IstioModel):
    """`from` a proxy locality (pattern), `to` upstream locality patterns with weights (sum 100)."""

    from_: LocalityPattern = Field(alias="from")
    to: dict[LocalityPattern, Annotated[int, Field(ge=0, le=100)]] = Field(min_length=1)


class LocalityFailover(IstioModel):
    """Proxies of region `from` fail over to region `to` before any other region."""

    from_: str = Field(alias="from", min_length=1)
    to: str = Field(min_length=1)


class LocalityLbSetting(IstioModel):
    enabled: bool | None = None
    distribute: tuple[LocalityDistribute, ...] = ()
    failover: tuple[LocalityFailover, ...] = ()

    @model_validator(mode="after")
    def _one_of(self) -> LocalityLbSetting:
        if self.distribute and self.failover:
            raise ValueError("only one of distribute, failover may be set")
        for item in self.distribute:
            if sum(item.to.values()) != 100:
                raise ValueError(f"distribute from {item.from_!r}: the weights must sum to 100")
        return self


class LoadBalancerSettings(IstioModel):
    simple: Annotated[SimpleLB, BeforeValidator(_upper)] | None = None
    consistent_hash: ConsistentHash | None = None
    # A Duration in spite of its name (Istio's field), e.g. "60s".
    warmup_duration_secs: PositiveDurationMs | None = None
    locality_lb_setting: LocalityLbSetting | None = None

    @model_validator(mode="after")
    def _one_of(self) -> LoadBalancerSettings:
        if self.simple is not None and self.consistent_hash is not None:
            raise ValueError("only one of simple, consistentHash may be set")
        if self.warmup_duration_secs is not None and self.consistent_hash is not None:
            raise ValueError("warmupDurationSecs works with ROUND_ROBIN and LEAST_REQUEST only")
        if self.warmup_duration_secs is not None and self.simple == "RANDOM":
            raise ValueError("warmupDurationSecs works with ROUND_ROBIN and LEAST_REQUEST only")
        return self


class TcpKeepalive(IstioModel):
    # Unset parts take the operating system's defaults (Istio and Envoy alike).
    probes: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    time: PositiveDurationMs | None = None
    interval: PositiveDurationMs | None = None


class TCPSettings(IstioModel):
    max_connections: PositiveInt32 | None = None
    connect_timeout: PositiveDurationMs | None = None
    tcp_keepalive: TcpKeepalive | None = None


class HTTPSettings(IstioModel):
    # Istio reads 0 as "unset" for these limits.
    http1_max_pending_requests: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    http2_max_requests: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    max_requests_per_connection: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    max_retries: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    idle_timeout: PositiveDurationMs | None = None
    # UPGRADE: HTTP/1.1 ports talk HTTP/2 to the endpoints (Istio's h2UpgradePolicy).
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None


class ConnectionPoolSettings(IstioModel):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(IstioModel):
    consecutive_5xx_errors: UInt32 | None = Field(default=None, alias="consecutive5xxErrors")
    consecutive_gateway_errors: UInt32 | None = None
    interval: PositiveDurationMs | None = None
    base_ejection_time: PositiveDurationMs | None = None
    max_ejection_percent: Annotated[int, Field(ge=0, le=100)] | None = None
    min_health_percent: Annotated[int, Field(ge=0, le=100)] | None = None


class RetryBudget(IstioModel):
    # Percent of active plus pending requests that may be retries (Envoy's default 20).
    percent: Annotated[float, Field(ge=0, le=100)] | None = None
    min_retry_concurrency: UInt32 | None = None


class PortTrafficPolicy(IstioModel):
    port: PortSelector
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TrafficPolicy(IstioModel):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    port_level_settings: tuple[PortTrafficPolicy, ...] = ()
    retry_budget: RetryBudget | None = None
    tls: ClientTLSSettings | None = None


class RuleWorkloadSelector(IstioModel):
    """Istio's WorkloadSelector as DestinationRule writes it (`matchLabels`)."""

    match_labels: dict[str, str] = Field(min_length=1)


class Subset(IstioModel):
    name: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(IstioModel):
    # A wildcard (`*.example.com`) applies to every service it covers that no exact rule names (Istio).
    host: HostPattern
    traffic_policy: TrafficPolicy | None = None
    subsets: tuple[Subset, ...] = ()
    # Istio: the rule applies only to workloads of its namespace with these labels.
    workload_selector: RuleWorkloadSelector | None = None
    # Which namespaces' proxies use it (model/exports.py).
    export_to: tuple[ExportTarget, ...] = ()

    @property
    def selector_key(self) -> tuple[tuple[str, str], ...]:
        """Rules for one host conflict only with rules for the same workloads (same selector)."""
        return tuple(sorted(self.workload_selector.match_labels.items())) if self.workload_selector else ()


class DestinationRule(PolicyObject):
    KIND: ClassVar[str] = "DestinationRule"

    kind: Literal["DestinationRule"]
    spec: DestinationRuleSpec

    def check(self) -> Iterator[Problem]:
        spec = self.spec
        for index in duplicates([subset.name for subset in spec.subsets]):
            yield Problem(
                ("spec", "subsets", index, "name"), f"duplicate subset {spec.subsets[index].name!r}"
            )
        yield from _check_policy(("spec", "trafficPolicy"), spec.traffic_policy)
        for index, subset in enumerate(spec.subsets):
            yield from _check_policy(("spec", "subsets", index, "trafficPolicy"), subset.traffic_policy)


def _check_policy(path: tuple[str | int, ...], policy: TrafficPolicy | None) -> Iterator[Problem]:
    if policy is None:
        return
    ports = [setting.port.number for setting in policy.port_level_settings]
    for index in duplicates(list(ports)):
        yield Problem((*path, "portLevelSettings", index, "port", "number"), f"duplicate port {ports[index]}")
