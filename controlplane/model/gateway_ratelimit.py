"""RateLimitPolicies → the rate limits of one gateway proxy (see api/ratelimit.py for the policy).

Policies apply to gateway proxies whose labels match their `selector`. Several matching policies are merged
per scope — gateway, client IP, each destination host, each route — the first by namespace/name that sets
a scope wins (validation has already dropped limits whose target does not exist). Destination hosts are
keyed by the service host as written in its ServiceEntry, which is what routes' clusters refer to.
"""

from __future__ import annotations

from controlplane.api.common import labels_match
from controlplane.api.policyset import PolicySet
from controlplane.api.ratelimit import Limit, RateLimitPolicy
from controlplane.model.gatewaymodel import RateLimits, TokenBucket
from controlplane.model.identity import ProxyIdentity
from controlplane.model.refs import PolicyRef, policy_ref
from controlplane.model.services import Registry


def bucket(limit: Limit) -> TokenBucket:
    return TokenBucket(limit.requests_per_unit, limit.interval_ms)


def build_rate_limits(policy: PolicySet, registry: Registry, proxy: ProxyIdentity) -> RateLimits:
    gateway: TokenBucket | None = None
    client_ip: TokenBucket | None = None
    destinations: dict[str, TokenBucket] = {}
    routes: dict[str, TokenBucket] = {}
    origins: list[PolicyRef] = []
    for item in policy.of_kind(RateLimitPolicy):
        if not labels_match(item.spec.selector, proxy.label_map):
            continue
        origins.append(policy_ref(policy, item))
        spec = item.spec
        if gateway is None and spec.gateway is not None:
            gateway = bucket(spec.gateway)
        if client_ip is None and spec.client_ip is not None:
            client_ip = bucket(spec.client_ip)
        for destination in spec.destinations:
            service = registry.resolve(destination.host, item.metadata.namespace)
            if service is not None:
                destinations.setdefault(service.host, bucket(destination.limit))
        for route in spec.routes:
            key = f"{route.vs_ref(item.metadata.namespace)}/{route.route}"
            routes.setdefault(key, bucket(route.limit))
    return RateLimits(gateway, client_ip, tuple(sorted(destinations.items())), tuple(sorted(routes.items())),
                      tuple(origins))
