"""Cross-object validation: the checks that need more than one policy object to decide.

Runs after every object has been decoded on its own. What happens to an object that fails here is chosen
to keep as much of the mesh working as possible (Contour's "prune the invalid part" approach), and always
comes with a diagnostic that names both objects of a conflict with their file:line. "First" below means
first in (kind, namespace, name) order — Istio uses creation time, which files do not have.

- MeshConfig: only the first applies; others are reported and dropped.
- ServiceEntry host already declared by an earlier ServiceEntry: removed from the later one (an entry left
  without hosts is dropped). A WorkloadEntry selected by a STATIC ServiceEntry must have an IP address.
- DestinationRule for a host no ServiceEntry declares: a Warning (IST0101), kept (it has no effect). Several
  DestinationRules for one host are merged as Istio merges them: the first one's `trafficPolicy` applies
  (a later one's is reported and removed), subsets are the union, and a subset name already defined by an
  earlier rule is reported and removed from the later one.
- VirtualService checks: see `validate_routes`.
- Gateways (credentials, conflicting servers), VirtualService `gateways` references, RateLimitPolicy
  targets: see `validate_gateways`.
- PeerAuthentication scopes, DestinationRule `tls` credentials: see `validate_security`.
- Telemetry naming a provider the MeshConfig does not define: dropped; a second Telemetry for the same
  scope: dropped (see `api.telemetry.check_telemetries`).

Field paths in diagnostics refer to the object as written (indexes before anything was removed).
"""

from __future__ import annotations

import ipaddress
import weakref
from dataclasses import dataclass

from controlplane.api.common import labels_match
from controlplane.api.destinationrule import DestinationRule
from controlplane.api.diagnostics import (
    Diagnostic,
)
from controlplane.api.gateway import Gateway
from controlplane.api.hosts import HostIndex, service_key, shared_short_hosts
from controlplane.api.kubernetes import KubernetesObject, KubernetesService
from controlplane.api.meshconfig import MeshConfig
from controlplane.api.meta import ObjectKey, PolicyObject
from controlplane.api.peerauthentication import PeerAuthentication
from controlplane.api.policyset import PolicySet
from controlplane.api.ratelimit import RateLimitPolicy
from controlplane.api.serviceentry import ServiceEntry
from controlplane.api.sidecar import Sidecar
from controlplane.api.telemetry import Telemetry, check_telemetries
from controlplane.api.validate_context import Context
from controlplane.api.validate_gateways import check_gateway_refs, check_gateways, check_rate_limits
from controlplane.api.validate_routes import check_virtual_service
from controlplane.api.validate_security import check_client_tls, check_peer_authentications
from controlplane.api.virtualservice import VirtualService
from controlplane.api.workloadentry import WorkloadEntry


def validate_policy(policy: PolicySet) -> tuple[PolicySet, list[Diagnostic]]:
    """The policy with cross-object errors pruned (see the module docstring), and what was pruned. The
    state its checks left stays attached to the result (`validation_of`) while the result lives."""
    ctx = Context(policy)
    routes: dict[ObjectKey, VirtualService | None] = {}
    kept: list[PolicyObject] = []
    # Kubernetes Services are services like ServiceEntries (api/kubernetes.py); first in key order wins.
    entries = policy.service_entries() + [svc.as_service_entry() for svc in policy.of_kind(KubernetesService)]
    ctx.shared = shared_short_hosts((h, se.metadata.namespace) for se in entries for h in se.spec.hosts)
    for se in sorted(entries, key=lambda entry: entry.key):
        checked = _service_entry(ctx, se)
        if checked is not None:
            kept.append(checked)
    ctx.index = HostIndex((host, se.metadata.namespace) for host, (se, _) in ctx.services.items())
    _workload_entries(ctx, policy.workload_entries())
    meshes = _mesh_configs(ctx, policy.of_kind(MeshConfig))
    kept.extend(meshes)
    telemetries, problems = check_telemetries(policy.of_kind(Telemetry), meshes[0] if meshes else None)
    for telemetry, path, message in problems:
        ctx.report(telemetry, path, message)
    kept.extend(telemetries)
    for dr in policy.destination_rules():
        check_client_tls(ctx, dr)
        kept.append(_destination_rule(ctx, dr))
    kept.extend(check_peer_authentications(ctx, policy.of_kind(PeerAuthentication)))
    for vs in policy.virtual_services():
        checked_vs = routes[vs.key] = check_virtual_service(ctx, vs)
        if checked_vs is not None:
            kept.append(checked_vs)
    kept.extend(check_gateways(ctx, policy.of_kind(Gateway)))
    kept.extend(check_rate_limits(ctx, policy.of_kind(RateLimitPolicy)))
    kept.extend(_sidecars(ctx, policy.of_kind(Sidecar)))
    kept = check_gateway_refs(ctx, kept)
    handled = (
        ServiceEntry, MeshConfig, DestinationRule, VirtualService, Telemetry, Gateway, RateLimitPolicy,
        KubernetesService, KubernetesObject,  # Services were converted above; the rest is ignored
        Sidecar, PeerAuthentication,
    )
    kept.extend(obj for obj in policy if not isinstance(obj, handled))
    result = policy.replace(kept)
    remember(result, Validation(policy, tuple(ctx.diagnostics), ctx, routes))
    return result, ctx.diagnostics


@dataclass(frozen=True)
class Validation:
    """How a validated PolicySet came about: its input, its diagnostics and the state the checks left,
    which api/validate_incremental.py re-checks one edited object from without checking all the others."""

    given: PolicySet
    diagnostics: tuple[Diagnostic, ...]
    ctx: Context
    # every VirtualService of `given` as `check_virtual_service` left it (None: dropped), before
    # `check_gateway_refs`, which only prunes the object's own `gateways`
    routes: dict[ObjectKey, VirtualService | None]


# validated PolicySet → its Validation; weak, so that the state goes with the set (a Validation never
# refers to the set it describes, which would keep it alive)
_VALIDATIONS: weakref.WeakKeyDictionary[PolicySet, Validation] = weakref.WeakKeyDictionary()


def remember(result: PolicySet, validation: Validation) -> None:
    _VALIDATIONS[result] = validation


def validation_of(result: PolicySet) -> Validation | None:
    """The Validation that made `result` (None for a set `validate_policy` did not return)."""
    return _VALIDATIONS.get(result)


def _sidecars(ctx: Context, sidecars: list[Sidecar]) -> list[Sidecar]:
    """One Sidecar without workloadSelector per namespace (istioctl analyze: IST0111); later ones dropped."""
    kept: list[Sidecar] = []
    defaults: dict[str, Sidecar] = {}
    for sidecar in sidecars:
        if sidecar.spec.workload_selector is None:
            first = defaults.setdefault(sidecar.metadata.namespace, sidecar)
            if first is not sidecar:
                message = f"the namespace has a Sidecar without workloadSelector: {ctx.where(first)}; ignored"
                ctx.report(sidecar, (), message, code="IST0111")
                continue
        kept.append(sidecar)
    return kept


def _mesh_configs(ctx: Context, configs: list[MeshConfig]) -> list[MeshConfig]:
    for other in configs[1:]:
        ctx.report(other, (), f"only one MeshConfig applies: {ctx.where(configs[0])}; ignored")
    return configs[:1]


def _service_entry(ctx: Context, se: ServiceEntry) -> ServiceEntry | None:
    hosts: list[str] = []
    for index, host in enumerate(se.spec.hosts):
        owner = ctx.services.get(service_key(host, se.metadata.namespace, ctx.shared))
        if owner is not None:
            message = f"host {host!r} is already declared by {ctx.where(owner[0])}; ignored here"
            ctx.report(se, ("spec", "hosts", index), message)
            continue
        hosts.append(host)
    if not hosts:
        return None
    if len(hosts) != len(se.spec.hosts):
        se = se.model_copy(update={"spec": se.spec.model_copy(update={"hosts": tuple(hosts)})})
    for host in hosts:
        ctx.services[service_key(host, se.metadata.namespace, ctx.shared)] = (se, se.spec)
    return se


def _workload_entries(ctx: Context, entries: list[WorkloadEntry]) -> None:
    """Reported, not dropped: the entry still serves DNS ServiceEntries; STATIC ones skip it (build)."""
    statics: dict[object, ServiceEntry] = {
        se.key: se
        for se, spec in ctx.services.values()
        if spec.resolution == "STATIC" and spec.workload_selector
    }
    for we in entries:
        try:
            ipaddress.ip_address(we.spec.address)
            continue
        except ValueError:
            pass
        for se in statics.values():
            selector = se.spec.workload_selector
            if selector is None or se.metadata.namespace != we.metadata.namespace:
                continue
            if labels_match(selector.labels, we.spec.labels):
                message = (
                    f"selected by STATIC {ctx.where(se)}, which needs an IP address; not an endpoint there"
                )
                ctx.report(we, ("spec", "address"), message)


def _destination_rule(ctx: Context, dr: DestinationRule) -> DestinationRule:
    if dr.spec.host.startswith("*"):
        # Applies to every service it covers (build/destinationrules); conflicts are not merged here.
        if not any(dr.spec.host == "*" or h.endswith(dr.spec.host[1:]) for h in ctx.services):
            message = f"host {dr.spec.host!r} covers no service declared by a ServiceEntry; no effect"
            ctx.missing(dr, ("spec", "host"), message)
        for covered in ctx.services:
            if dr.spec.host == "*" or covered.endswith(dr.spec.host[1:]):
                for subset in dr.spec.subsets:
                    ctx.subsets.setdefault(covered, {}).setdefault(subset.name, dr)
        return dr
    host = ctx.resolve(dr.spec.host, dr.metadata.namespace)
    if host is None:
        ctx.missing(
            dr, ("spec", "host"), f"host {dr.spec.host!r} is not declared by any ServiceEntry; no effect"
        )
        return dr
    # Rules with different workloadSelectors are for different workloads: they do not conflict.
    group = (host, dr.spec.selector_key)
    defined = ctx.subset_owners.setdefault(group, {})
    update: dict[str, object] = {}
    if dr.spec.traffic_policy is not None:
        owner = ctx.policy_owners.setdefault(group, dr)
        if owner is not dr:
            message = f"host {host!r} already has a trafficPolicy from {ctx.where(owner)}; ignored here"
            ctx.report(dr, ("spec", "trafficPolicy"), message)
            update["traffic_policy"] = None
    subsets = []
    for index, subset in enumerate(dr.spec.subsets):
        other = defined.get(subset.name)
        if other is not None:
            message = (
                f"subset {subset.name!r} of {host!r} is already defined by {ctx.where(other)}; ignored here"
            )
            ctx.report(dr, ("spec", "subsets", index, "name"), message)
            continue
        defined[subset.name] = dr
        ctx.subsets.setdefault(host, {}).setdefault(subset.name, dr)
        subsets.append(subset)
    if len(subsets) != len(dr.spec.subsets):
        update["subsets"] = tuple(subsets)
    if not update:
        return dr
    return dr.model_copy(update={"spec": dr.spec.model_copy(update=update)})
