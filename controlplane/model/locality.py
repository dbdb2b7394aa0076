"""Locality load balancing: Envoy priorities and locality weights from endpoint and proxy localities.

Follows Istio (pilot/pkg/networking/core/loadbalancer): localities are `region/zone/subzone`, from
WorkloadEntry (or ServiceEntry endpoint) `locality` and the proxy's node.locality.

- `distribute` (DestinationRule `localityLbSetting`): the first entry whose `from` matches the proxy's
  locality gives each `to` pattern its weight, shared evenly by the endpoint localities it matches (first
  matching pattern wins); localities no pattern matches get no traffic (left out). The cluster uses
  Envoy's locality-weighted load balancing.
- failover (the default once the cluster has outlier detection, as in Istio: without it Envoy would never
  leave priority 0): priority 0 for the proxy's own region/zone/subzone, 1 same region and zone, 2 same
  region, 3 a region that a `failover` entry names as the proxy region's `to`, 4 the rest; priorities are
  then made contiguous (Envoy requires it).
- `enabled: false`, a proxy or endpoints without locality: one priority, no weights.

Patterns: `*` matches everything, `region/*` and `region/zone/*` a prefix, anything else the locality
itself or a locality below it (`us-west` matches `us-west/zone1/sz1`).
"""

from __future__ import annotations

from dataclasses import replace

from controlplane.model.cluster_policy import LocalitySetting
from controlplane.model.proxy_model import Endpoint


def apply_locality(
    endpoints: list[Endpoint], proxy_locality: str, setting: LocalitySetting | None, failover: bool
) -> tuple[list[Endpoint], bool]:
    """The endpoints with priorities / weights set, and whether the cluster is locality-weighted."""
    if not proxy_locality or not any(e.locality for e in endpoints):
        return endpoints, False
    if setting is not None and not setting.enabled:
        return endpoints, False
    if setting is not None and setting.distribute:
        for source, targets in setting.distribute:
            if matches(source, proxy_locality):
                return _distribute(endpoints, targets), True
        return endpoints, False
    if not failover:
        return endpoints, False
    return _failover(endpoints, proxy_locality, setting.failover if setting else ()), False


def matches(pattern: str, locality: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        return (locality + "/").startswith(pattern[:-1])
    return locality == pattern or locality.startswith(pattern + "/")


def _distribute(endpoints: list[Endpoint], targets: tuple[tuple[str, int], ...]) -> list[Endpoint]:
    localities = sorted({e.locality for e in endpoints})
    owner = {loc: next((p for p, _ in targets if matches(p, loc)), None) for loc in localities}
    shares = {p: sum(1 for o in owner.values() if o == p) for p, _ in targets}
    by_pattern = dict(targets)
    weights: dict[str, int] = {}
    for loc, pattern in owner.items():
        if pattern is not None and by_pattern[pattern] > 0:
            weights[loc] = max(1, by_pattern[pattern] // shares[pattern])
    return [replace(e, locality_weight=weights[e.locality]) for e in endpoints if e.locality in weights]


def _failover(endpoints: list[Endpoint], proxy: str, rules: tuple[tuple[str, str], ...]) -> list[Endpoint]:
    mine = [*proxy.split("/"), "", ""][:3]
    targets = {to for source, to in rules if source == mine[0]}
    raw = {e.locality: _priority(mine, [*e.locality.split("/"), "", ""][:3], targets) for e in endpoints}
    levels = {level: index for index, level in enumerate(sorted(set(raw.values())))}
    return [replace(e, priority=levels[raw[e.locality]]) for e in endpoints]


def _priority(mine: list[str], theirs: list[str], failover_regions: set[str]) -> int:
    if theirs[0] != mine[0]:
        return 3 if theirs[0] in failover_regions else 4
    if theirs[1] != mine[1]:
        return 2
    return 1 if theirs[2] != mine[2] else 0
