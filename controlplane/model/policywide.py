"""The policy-wide half of the build stage: sub-results shared by every proxy, computed once per PolicySet.

`build_proxy` (model/sidecar.py) is the reference: it builds one proxy's model from scratch. `PolicyWide`
builds the same `ProxyModel` (equal by value; the equivalence property test checks it), but remembers each
sub-result keyed by exactly the part of the proxy identity it read, so a thousand distinct sidecars share
one service registry, one set of resolved DestinationRules, one tuple of clusters and one tuple of
outbound virtual hosts *by reference* (the translate/intern stage, xds/assembly.py, then keys its own
memos by those objects' identities).

What a sub-result depends on is not declared but observed: it runs against a traced identity
(model/tracing.py) that records which identity fields and which label keys it read (`labels.get("app")`
reads one key; iterating the labels reads all). A build stage is deterministic, so another proxy with the
same values at those reads takes the same path and gets the same result. Examples: exportTo depends on
the namespace only; the registry on the namespace and the Sidecar resource selected; the clusters on the
DestinationRules that apply (a `workloadSelector` reads only its own label keys) and the locality; the
route tables on which VirtualService `sourceLabels` match.

One `PolicyWide` serves one PolicySet (one generation); a reload makes a new one and hands it the last
(`PolicyWide(policy, previous)`), which lends what did not change. Two grains:
- whole sub-results: the memo's keys name what each step reads of the policy as *instances* (the
  ServiceEntries and WorkloadEntries with their sources for the registry, the DestinationRules for the
  rules, the VirtualServices for virtual hosts and TCP listeners) and earlier results (themselves lent,
  so the same objects), and a key equal to one of the previous generation's gets its result, for the
  same proxy reads. After a VirtualService edit the registry, rules and clusters are the same objects;
- per service (model/carry.py): a service's clusters and a VirtualService's routes, when only some of
  their kind changed.
The policy store keeps an unchanged object's instance across reloads, so "the same instances" is what
"unchanged" means; keys that cannot be equal across generations hold the generation's own PolicySet.
Memos are bounded (`MAX_ENTRIES`): a proxy with unique labels on every reconnect can add entries only when
its labels are read, and the table is cleared when full; only the previous generation's tables are kept.
Gateways are few and built in full (`build_proxy`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from controlplane.api.destinationrule import DestinationRule
from controlplane.api.meta import PolicyObject
from controlplane.api.policyset import PolicySet
from controlplane.api.serviceentry import ServiceEntry
from controlplane.api.sidecar import Sidecar, select_sidecar
from controlplane.api.virtualservice import VirtualService
from controlplane.api.workloadentry import WorkloadEntry
from controlplane.model.carry import Carry
from controlplane.model.clusters import build_clusters
from controlplane.model.destinationrules import destination_rules
from controlplane.model.exports import exported_policy
from controlplane.model.hashing import Hashed
from controlplane.model.identity import ProxyIdentity, Role
from controlplane.model.mtls import client_credentials
from controlplane.model.proxy_model import ProxyModel
from controlplane.model.routing import build_virtual_hosts, mesh_routing
from controlplane.model.services import service_registry, visible_services
from controlplane.model.sidecar import MeshDefaults, build_proxy, forwards_by_authority, sidecar_model
from controlplane.model.tcp import build_tcp_listeners
from controlplane.model.telemetry import build_telemetry
from controlplane.model.tracing import Reads, Ref, Spec, signature, traced

T = TypeVar("T")

# Entries per memo table before it is cleared (bounds memory under unique-label churn).
MAX_ENTRIES = 4096

class _Memo:
    """Results by (inputs, what the computation read of the proxy)."""

    def __init__(self, previous: _Memo | None = None) -> None:
        # inputs -> [(spec, {signature: result})]; a few specs per input at most (paths differ by value)
        self._tables: dict[object, list[tuple[Spec, dict[tuple[object, ...], Any]]]] = {}
        self._entries = 0
        # the previous generation's tables (not the generation: no chain builds up), which lend results
        # whose key is equal in this one (keys made of objects carried across generations, see `model`)
        self._lent = previous._tables if previous is not None else {}

    def get(self, key: object, proxy: ProxyIdentity, compute: Callable[[ProxyIdentity], T]) -> T:
        tables = self._tables.get(key)
        if tables is not None:
            for spec, results in tables:
                values = signature(spec, proxy)
                if values in results:
                    return results[values]
        spec, result = self._compute(key, proxy, compute)
        if self._entries >= MAX_ENTRIES:
            self._tables.clear()
            self._entries = 0
        tables = self._tables.setdefault(key, [])
        found = next((results for known, results in tables if known == spec), None)
        if found is None:
            found = {}
            tables.append((spec, found))
        found[signature(spec, proxy)] = result
        self._entries += 1
        return result

    def _compute(self, key: object, proxy: ProxyIdentity,
                 compute: Callable[[ProxyIdentity], T]) -> tuple[Spec, T]:
        """(what it read of the proxy, the result): lent by the previous generation, or computed."""
        for spec, results in self._lent.get(key, ()):
            values = signature(spec, proxy)
            if values in results:
                return spec, results[values]
        reads = Reads()
        result = compute(traced(proxy, reads))
        return reads.spec(), result

    def settle(self) -> None:
        self._lent = {}

    def plain(self, key: object, compute: Callable[[], T]) -> T:
        """A result that does not depend on the proxy at all."""
        return self.get(key, _ANYONE, lambda _: compute())


_ANYONE = ProxyIdentity()


def _objects(policy: PolicySet, *kinds: type[PolicyObject]) -> Hashed:
    """The objects of `kinds` in `policy` with their sources, as instances: equal in two generations when
    none of them changed (the policy store keeps unchanged objects' and sources' instances). Hashed once:
    every shape's lookups use it."""
    # by type, as the build stage selects them: a Kubernetes Service is a ServiceEntry of kind "Service"
    sources = policy.sources
    return Hashed(tuple((Ref(obj), Ref(sources.get(obj.key)))
                        for kind in kinds for obj in policy.of_kind(kind)))


class PolicyWide:
    """The policy-wide sub-results of one PolicySet; `model(proxy)` equals `build_proxy(policy, proxy)`."""

    def __init__(self, policy: PolicySet, previous: PolicyWide | None = None) -> None:
        self.policy = policy
        self._memo: _Memo = _Memo(previous._memo if previous is not None else None)
        # per-service results lent by the previous generation (model/carry.py)
        self.carry: Carry = Carry(previous.carry if previous is not None else None)

    def settle(self) -> None:
        """Forget what the previous generation lent (once every live shape is built: the reload's
        publish), so one generation at a time is kept."""
        self._memo.settle()
        self.carry.settle()

    def model(self, proxy: ProxyIdentity) -> ProxyModel:
        if proxy.role is Role.GATEWAY:
            return build_proxy(self.policy, proxy)
        memo = self._memo
        # exportTo: what this proxy's namespace sees (model/sidecar.py build_proxy, step by step)
        namespace = proxy.namespace
        # (every key names its generation's objects: the previous generation's memo lends only what
        # was computed from the same instances)
        policy = memo.plain(("exported", Ref(self.policy), namespace),
                            lambda: exported_policy(self.policy, namespace))
        scope = Ref(policy)
        mesh = memo.plain(("mesh", scope), lambda: MeshDefaults.of(policy))
        sidecar = memo.get(("sidecar", scope), proxy, lambda p: select_sidecar(
            policy.of_kind(Sidecar), p.namespace, p.label_map, mesh.root_namespace))
        carry = self.carry
        # Keys below name what each step reads of the policy as instances (`_objects`: the objects of the
        # kinds it reads, with their sources) and earlier results (carried, so the same objects when
        # their inputs are): an edit that leaves a step's inputs alone gets the previous generation's
        # result from `_Memo._lent`. The registry reads ServiceEntries and WorkloadEntries; the rules
        # DestinationRules; virtual hosts and TCP listeners VirtualServices; the clusters the rest
        # (`carry.context`) and the MeshConfig's connect timeout.
        services = memo.plain(("objects", scope, "services"),
                              lambda: _objects(policy, ServiceEntry, WorkloadEntry))
        everything = memo.plain(("services", services), lambda: carry.registry(service_registry(policy)))
        registry = memo.plain(("visible", Ref(everything), Ref(sidecar)),
                              lambda: visible_services(everything, sidecar))
        seen = Ref(registry)
        rule_objects = memo.plain(("objects", scope, "rules"), lambda: _objects(policy, DestinationRule))
        rules = memo.get(("rules", rule_objects, seen), proxy,
                         lambda p: carry.rules(destination_rules(policy, registry, p)))
        ruled = Ref(rules)
        routing = memo.plain(("objects", scope, "routing"), lambda: _objects(policy, VirtualService))
        # which VirtualService routes each host: read by the virtual hosts and the TCP listeners alike
        routed = memo.plain(("routed", routing, seen), lambda: mesh_routing(policy, registry))
        virtual_hosts = memo.get(("vhosts", routing, seen, ruled), proxy,
                                 lambda p: build_virtual_hosts(policy, registry, rules, p, carry.routes,
                                                               routed))
        context = memo.plain(("context", scope), lambda: carry.context(policy))
        clusters = memo.get(("clusters", seen, ruled, Ref(context), mesh.connect_timeout_ms), proxy,
                            lambda p: build_clusters(
                                policy, registry, rules, mesh.connect_timeout_ms, p.locality,
                                carry.clusters(context, mesh.connect_timeout_ms, p.locality)))
        dynamic = memo.plain(("dynamic", Ref(clusters)), lambda: forwards_by_authority(clusters))
        tcp = memo.get(("tcp", routing, seen), proxy,
                       lambda p: build_tcp_listeners(policy, registry, p, routed))
        telemetry = memo.get(("telemetry", scope), proxy, lambda p: build_telemetry(policy, p))
        credentials = memo.plain(("credentials", scope, Ref(clusters)),
                                 lambda: client_credentials(policy, clusters, set()))
        return sidecar_model(policy, proxy, mesh, sidecar, clusters=clusters, virtual_hosts=virtual_hosts,
                             tcp_listeners=tcp, forwards_by_authority=dynamic, telemetry=telemetry,
                             client_credentials=credentials)
