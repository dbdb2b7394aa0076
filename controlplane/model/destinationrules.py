"""DestinationRules → the policy of each cluster, merged the way Istio merges it.

Several DestinationRules for one host are combined (validation has already removed the conflicting parts):
the first rule with a `trafficPolicy` supplies it, and subsets are the union in rule order.

For the cluster of one (port, subset), Istio's MergeTrafficPolicy (pilot/pkg/networking/util) applies:
1. the rule's top-level policy, with its `portLevelSettings` for this port replacing the load balancer,
   connection pool and outlier detection *entirely* (port-level settings do not inherit);
2. for a subset cluster: each component the subset's policy sets replaces the one from step 1, and the
   subset's own `portLevelSettings` for the port then replace all three again.
The retry budget has no port-level form; it follows the same component rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from controlplane.api import destinationrule as dr
from controlplane.api.common import labels_match
from controlplane.api.policyset import PolicySet
from controlplane.model.cluster_policy import (
    ClusterPolicy,
    ConnectionPool,
    HashKey,
    LbPolicy,
    LoadBalancer,
    LocalitySetting,
    OutlierDetection,
    RetryBudget,
)
from controlplane.model.identity import ProxyIdentity
from controlplane.model.proxy_model import PolicyRef
from controlplane.model.services import Registry, origin_of

_SIMPLE = {
    None: LbPolicy.LEAST_REQUEST,
    "UNSPECIFIED": LbPolicy.LEAST_REQUEST,
    "LEAST_CONN": LbPolicy.LEAST_REQUEST,
    "LEAST_REQUEST": LbPolicy.LEAST_REQUEST,
    "ROUND_ROBIN": LbPolicy.ROUND_ROBIN,
    "RANDOM": LbPolicy.RANDOM,
}


@dataclass
class HostRules:
    """Everything the DestinationRules say about one host."""

    traffic_policy: dr.TrafficPolicy | None = None
    subsets: dict[str, dr.Subset] = field(default_factory=dict)
    origins: list[PolicyRef] = field(default_factory=list)


def destination_rules(
    policy: PolicySet, registry: Registry, proxy: ProxyIdentity | None = None
) -> dict[str, HostRules]:
    """Canonical host → merged rules. Rules for hosts no ServiceEntry declares are ignored.

    A rule with `workloadSelector` applies only to a `proxy` of its namespace whose labels match, and
    before the rules without one. A wildcard host applies to the services it covers that no exact rule
    names, the most specific wildcard first (Istio's host precedence).
    """
    applicable = [
        rule for rule in policy.destination_rules()
        if rule.spec.workload_selector is None or _selects(rule, proxy)
    ]
    applicable.sort(key=lambda rule: rule.spec.workload_selector is None)  # stable: keeps key order
    rules: dict[str, HostRules] = {}
    for rule in applicable:
        if rule.spec.host.startswith("*"):
            continue
        service = registry.resolve(rule.spec.host, rule.metadata.namespace)
        if service is not None:
            _merge(policy, rules.setdefault(service.host, HostRules()), rule)
    exact = set(rules)
    wildcards = [r for r in applicable if r.spec.host.startswith("*")]
    wildcards.sort(key=lambda r: -len(r.spec.host))
    for rule in wildcards:
        suffix = rule.spec.host[1:]
        for host in registry.services:
            if host not in exact and (rule.spec.host == "*" or host.endswith(suffix)):
                _merge(policy, rules.setdefault(host, HostRules()), rule)
    return rules


def _selects(rule: dr.DestinationRule, proxy: ProxyIdentity | None) -> bool:
    selector = rule.spec.workload_selector
    if proxy is None or selector is None or proxy.namespace != rule.metadata.namespace:
        return False
    return labels_match(selector.match_labels, proxy.label_map)


def _merge(policy: PolicySet, merged: HostRules, rule: dr.DestinationRule) -> None:
    merged.origins.append(origin_of(policy, rule))
    if merged.traffic_policy is None:
        merged.traffic_policy = rule.spec.traffic_policy
    for subset in rule.spec.subsets:
        merged.subsets.setdefault(subset.name, subset)


def cluster_policy(rules: HostRules | None, port: int, subset: str = "") -> ClusterPolicy:
    if rules is None:
        return ClusterPolicy()
    merged = _Components.of(rules.traffic_policy, port)
    if subset:
        subset_rule = rules.subsets.get(subset)
        if subset_rule is not None and subset_rule.traffic_policy is not None:
            merged = merged.override(_Components.of(subset_rule.traffic_policy, port))
    return merged.to_model()


@dataclass(frozen=True)
class _Components:
    load_balancer: dr.LoadBalancerSettings | None = None
    connection_pool: dr.ConnectionPoolSettings | None = None
    outlier_detection: dr.OutlierDetection | None = None
    retry_budget: dr.RetryBudget | None = None
    # Set when a portLevelSettings entry supplied the first three (they then replace, not merge).
    port_level: bool = False

    @classmethod
    def of(cls, policy: dr.TrafficPolicy | None, port: int) -> _Components:
        if policy is None:
            return cls()
        for setting in policy.port_level_settings:
            if setting.port.number == port:
                return cls(
                    setting.load_balancer,
                    setting.connection_pool,
                    setting.outlier_detection,
                    policy.retry_budget,
                    port_level=True,
                )
        return cls(
            policy.load_balancer, policy.connection_pool, policy.outlier_detection, policy.retry_budget
        )

    def override(self, subset: _Components) -> _Components:
        budget = subset.retry_budget or self.retry_budget
        if subset.port_level:
            return replace(subset, retry_budget=budget)
        return _Components(
            subset.load_balancer or self.load_balancer,
            subset.connection_pool or self.connection_pool,
            subset.outlier_detection or self.outlier_detection,
            budget,
        )

    def to_model(self) -> ClusterPolicy:
        return ClusterPolicy(
            load_balancer=_load_balancer(self.load_balancer),
            connection_pool=_connection_pool(self.connection_pool),
            outlier_detection=_outlier(self.outlier_detection),
            retry_budget=_retry_budget(self.retry_budget),
        )


def _load_balancer(settings: dr.LoadBalancerSettings | None) -> LoadBalancer:
    if settings is None:
        return LoadBalancer()
    locality = _locality(settings.locality_lb_setting)
    hashing = settings.consistent_hash
    if hashing is None:
        return LoadBalancer(
            _SIMPLE[settings.simple], warmup_ms=settings.warmup_duration_secs, locality=locality
        )
    cookie = hashing.http_cookie
    key = HashKey(
        header=hashing.http_header_name,
        cookie=cookie.name if cookie else None,
        cookie_path=cookie.path if cookie else None,
        cookie_ttl_ms=cookie.ttl if cookie else None,
        source_ip=bool(hashing.use_source_ip),
        query_parameter=hashing.http_query_parameter_name,
    )
    if hashing.maglev is not None:
        return LoadBalancer(
            LbPolicy.MAGLEV, key, maglev_table_size=hashing.maglev.table_size, locality=locality
        )
    ring = hashing.ring_hash.minimum_ring_size if hashing.ring_hash else hashing.minimum_ring_size
    return LoadBalancer(LbPolicy.RING_HASH, key, minimum_ring_size=ring or 1024, locality=locality)


def _locality(setting: dr.LocalityLbSetting | None) -> LocalitySetting | None:
    if setting is None:
        return None
    return LocalitySetting(
        enabled=setting.enabled is not False,
        distribute=tuple((d.from_, tuple(d.to.items())) for d in setting.distribute),
        failover=tuple((f.from_, f.to) for f in setting.failover),
    )


def _connection_pool(settings: dr.ConnectionPoolSettings | None) -> ConnectionPool:
    if settings is None:
        return ConnectionPool()
    tcp = settings.tcp or dr.TCPSettings()
    http = settings.http or dr.HTTPSettings()
    return ConnectionPool(
        max_connections=tcp.max_connections,
        connect_timeout_ms=tcp.connect_timeout,
        # Istio reads 0 as unset for these.
        max_pending_requests=http.http1_max_pending_requests or None,
        max_requests=http.http2_max_requests or None,
        max_retries=http.max_retries or None,
        max_requests_per_connection=http.max_requests_per_connection or None,
        idle_timeout_ms=http.idle_timeout,
        tcp_keepalive=(
            (tcp.tcp_keepalive.probes, tcp.tcp_keepalive.time, tcp.tcp_keepalive.interval)
            if tcp.tcp_keepalive is not None
            else None
        ),
        h2_upgrade=http.h2_upgrade_policy == "UPGRADE",
    )


def _outlier(settings: dr.OutlierDetection | None) -> OutlierDetection | None:
    if settings is None:
        return None
    return OutlierDetection(
        consecutive_5xx=settings.consecutive_5xx_errors,
        consecutive_gateway_errors=settings.consecutive_gateway_errors,
        interval_ms=settings.interval,
        base_ejection_time_ms=settings.base_ejection_time,
        max_ejection_percent=settings.max_ejection_percent,
        min_health_percent=settings.min_health_percent or 0,
    )


def _retry_budget(settings: dr.RetryBudget | None) -> RetryBudget | None:
    if settings is None:
        return None
    return RetryBudget(settings.percent, settings.min_retry_concurrency)
