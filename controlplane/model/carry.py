"""What one policy generation lends the next: per-service model results whose inputs did not change.

An edit changes a few policy objects; every other object of the new PolicySet is the same instance as
before (the policy store keeps an unchanged object's instance across reloads, policystore.py). `PolicyWide`
(model/policywide.py) hands each generation's `Carry` the previous one's, and the model stage then rebuilds
only what the edit touched, one service at a time:

- **services**: a registry's `Service` for one host is replaced by the equal one the previous generation
  (or another scope of this one) made, found by (host, namespace, the ServiceEntry spec and workload
  specs as instances, origin); so an unchanged service is the same object in every generation;
- **host rules**: likewise the merged DestinationRules of one host, by the rules' parts as instances;
- **clusters of one service**: by (service, its host rules, connect timeout, locality, policy context);
  the *policy context* stands for everything else the cluster build reads of the PolicySet
  (PeerAuthentications, WorkloadGroups, the MeshConfig, credentials): the instances of every object that
  is not a ServiceEntry, WorkloadEntry, DestinationRule or VirtualService, and the credentials' values.
  An edit of any of those lends no clusters (they are rebuilt, as from scratch);
- **routes of one (VirtualService, port)**: by the VirtualService instance, with the lookups the routes
  made into the registry and rules (`RouteContext.cluster`, `subset_defined`, `hash_key`) recorded and
  made again before they are lent: the same answers mean the same path through a deterministic build,
  so the same routes. Routes that read the proxy identity (`sourceLabels`, `sourceNamespace`) are not
  lent: they are rebuilt for each proxy as before, and what they read is recorded for PolicyWide's memo.

Everything lent is equal by value to what a fresh build makes (tests/unit/test_assembly_equivalence.py
chains generations through the policy store, as the server does). Lent results are the previous
generation's only, and a generation keeps what it used: memory follows the current policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from controlplane.api.destinationrule import DestinationRule
from controlplane.api.policyset import PolicySet
from controlplane.api.serviceentry import ServiceEntry
from controlplane.api.virtualservice import VirtualService
from controlplane.api.workloadentry import WorkloadEntry
from controlplane.model.cluster_policy import HashKey
from controlplane.model.clusters import ServiceClusters
from controlplane.model.destinationrules import HostRules
from controlplane.model.httproutes import RouteContext
from controlplane.model.proxy_model import Cluster, ClusterRef
from controlplane.model.routemodel import Route
from controlplane.model.routing import vs_routes
from controlplane.model.services import Registry, Service
from controlplane.model.tracing import Reads, Ref, detached, replay

T = TypeVar("T")

# The kinds whose objects reach a cluster only through its Service and HostRules (captured by instance in
# their keys); any other object is part of the policy context. By type, as the build stage selects them
# (a Kubernetes Service is a ServiceEntry of kind "Service").
KEYED_KINDS = (ServiceEntry, WorkloadEntry, DestinationRule, VirtualService)
# Per-service cluster results kept per generation: one per (service, locality) in use, so proxies with a
# new locality on every reconnect could add a thousand each; the table is cleared when full.
MAX_CLUSTER_RESULTS = 20_000
# Variants of one (VirtualService, port)'s routes kept per generation: scopes whose registries answer the
# routes' lookups differently (a Sidecar hiding a destination, exportTo) each get one.
ROUTE_VARIANTS = 4

# ("service", (host, namespace), what it resolved to) or ("rules", (host, ""), the host's rules)
Lookup = tuple[str, tuple[str, str], object]
# (the registry and rules the routes were made with, their lookups, the routes)
RouteVariant = tuple[Ref, Ref, tuple[Lookup, ...], tuple[Route, ...]]


class Carry:
    """One generation's results by what they were computed from; `previous` lends its own."""

    def __init__(self, previous: Carry | None = None) -> None:
        # only the previous generation's tables are kept, not the generation itself: no chain builds up.
        # They are that generation's live tables: its last shapes may still be built (in the snapshot
        # worker) while this one warms up in another thread. Each access is one dict operation, atomic
        # under the GIL; a clear there, or a lost route variant, only means rebuilding here.
        self._lent: dict[str, dict[Any, Any]] = previous._tables if previous is not None else {}
        self._tables: dict[str, dict[Any, Any]] = {}

    def settle(self) -> None:
        """Forget the previous generation's tables (see PolicyWide.settle)."""
        self._lent = {}

    def _find(self, table: str, key: object) -> Any:
        mine = self._tables.setdefault(table, {})
        found = mine.get(key)
        if found is None:
            found = self._lent.get(table, {}).get(key)
            if found is not None:
                mine[key] = found
        return found

    def _keep(self, table: str, key: object, value: object) -> None:
        self._tables.setdefault(table, {})[key] = value

    def _found_or(self, table: str, key: object, make: Callable[[], T]) -> T:
        """What `table` has (or was lent) for `key`, else `make()`, kept."""
        found: T | None = self._find(table, key)
        if found is None:
            found = make()
            self._keep(table, key, found)
        return found

    def registry(self, registry: Registry) -> Registry:
        """`registry` with each service replaced by the equal one already made, if any."""
        return Registry({host: self._service(service) for host, service in registry.services.items()},
                        registry.index)

    def _service(self, service: Service) -> Service:
        key = (service.host, service.namespace, Ref(service.spec), tuple(map(Ref, service.workloads)),
               service.origin)
        return self._found_or("services", key, lambda: service)

    def rules(self, rules: dict[str, HostRules]) -> dict[str, HostRules]:
        """`rules` with each host's rules replaced by the equal ones already made, if any."""
        return {host: self._host_rules(host_rules) for host, host_rules in rules.items()}

    def _host_rules(self, rules: HostRules) -> HostRules:
        key = (Ref(rules.traffic_policy), tuple((name, Ref(s)) for name, s in rules.subsets.items()),
               tuple(rules.origins))
        return self._found_or("rules", key, lambda: rules)

    def context(self, policy: PolicySet) -> object:
        """A token for what else the cluster build reads of `policy`: the same token for PolicySets whose
        objects outside `KEYED_KINDS` are the same instances and whose credentials are equal."""
        key = (tuple(Ref(obj) for obj in policy if not isinstance(obj, KEYED_KINDS)),
               tuple(policy.credentials.items()))
        return self._found_or("contexts", key, _Token)

    def clusters(self, context: object, connect_timeout_ms: int, locality: str) -> ServiceClusters:
        """For model/clusters.build_clusters: a service's clusters, lent when made from the same inputs."""

        def lend(service: Service, rules: HostRules | None,
                 make: Callable[[], Sequence[Cluster]]) -> Sequence[Cluster]:
            key = (Ref(service), Ref(rules), connect_timeout_ms, locality, Ref(context))
            if len(self._tables.get("clusters", ())) >= MAX_CLUSTER_RESULTS:
                self._tables["clusters"].clear()
            return self._found_or("clusters", key, lambda: tuple(make()))

        return lend

    def routes(self, ctx: RouteContext, vs: VirtualService, port: int) -> tuple[Route, ...]:
        """For model/routing.build_virtual_hosts: `vs_routes(ctx, vs, port)`, lent when what it looked up
        in the registry and rules is the same objects in `ctx` (services and host rules are carried, so
        an unchanged destination is the same object)."""
        key = (Ref(vs), port)
        variants: list[RouteVariant] = self._find("routes", key) or []
        for registry, rules, lookups, routes in variants:
            # the same registry and rules objects (lent whole after most edits) answer the same
            if (registry.obj is ctx.registry and rules.obj is ctx.rules) or all(
                    _look(ctx, lookup) is lookup[2] for lookup in lookups):
                return routes
        reads = Reads()
        recording = _RecordingContext(ctx.registry, ctx.rules, detached(ctx.proxy, reads), ctx.namespace)
        routes = vs_routes(recording, vs, port)
        if reads.fields or reads.labels or reads.all_labels:
            replay(reads, ctx.proxy)  # what the routes read, for the caller's tracing; not lent
            return routes
        made = (Ref(ctx.registry), Ref(ctx.rules), tuple(recording.lookups), routes)
        self._keep("routes", key, [made, *variants[:ROUTE_VARIANTS - 1]])
        return routes


def _look(ctx: RouteContext, lookup: Lookup) -> object:
    kind, (host, namespace), _ = lookup
    return ctx.registry.resolve(host, namespace) if kind == "service" else ctx.rules.get(host)


class _Token:
    """Stands for one policy context (compared by identity)."""

    __slots__ = ()


@dataclass(frozen=True)
class _RecordingContext(RouteContext):
    """A RouteContext that records what its lookups read: the service a destination host resolves to, and
    the rules of a host (everything `RouteContext`'s answers are computed from, with the route itself)."""

    lookups: list[Lookup] = field(default_factory=list)

    def cluster(self, destination: Any, request_port: int | None = None) -> Any:
        key = (destination.host, self.namespace)
        self.lookups.append(("service", key, self.registry.resolve(*key)))
        return super().cluster(destination, request_port)

    def subset_defined(self, ref: ClusterRef) -> bool:
        self._rules_of(ref)
        return super().subset_defined(ref)

    def hash_key(self, ref: ClusterRef) -> HashKey | None:
        self._rules_of(ref)
        return super().hash_key(ref)

    def _rules_of(self, ref: ClusterRef) -> None:
        host = ref.service.host
        self.lookups.append(("rules", (host, ""), self.rules.get(host)))
