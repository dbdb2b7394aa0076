"""Per-proxy assembly: a proxy's snapshot from shared, already interned pieces plus its own few resources.

The full rebuild (build_proxy → translate_proxy → Snapshot.build) is the reference; this is the fast path
that must give the same snapshot (same resources, same versions: tests/unit/test_assembly_equivalence.py).

    PolicyWide.model(proxy)          model/policywide.py: the model, its big parts shared by reference
      ├─ clusters + endpoints  ┐
      ├─ outbound route table  ├─ SharedTranslation: translated and interned once per model part
      ├─ TCP listeners         ┘   (keyed by the part's identity), one `Layer` per type
      └─ the rest (own)         translate.add_outbound/add_own: the listeners on the proxy's addresses,
                                the inbound side, TLS credentials, telemetry; plus per-identity secrets
    Assembly.snapshot(interner)  Snapshot whose per-type mappings are `Layered` (shared layer + own)

A SharedTranslation lives for one policy generation (one factory), so nothing is invalidated: a reload
makes a new one, and the old one goes with the last snapshot that referenced its resources.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from google.protobuf.message import Message

from controlplane.model.identity import ProxyIdentity
from controlplane.model.policywide import MAX_ENTRIES, PolicyWide, Ref
from controlplane.model.proxy_model import ProxyModel
from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, Origin, Resources
from controlplane.translate.translator import (
    add_clusters,
    add_outbound,
    add_outbound_routes,
    add_own,
    add_tcp_listeners,
)
from controlplane.xds.layers import Layer, Layered, Merged
from controlplane.xds.snapshot import Interner, Resource, Snapshot, content_hash, eds_name, rds_names


class SharedPart:
    """The resources of one shared model part, interned once (per interner) into one `Layer` per type."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self._interned: tuple[Interner, dict[str, Layer]] | None = None
        self._references: tuple[dict[str, str], dict[str, frozenset[str]], bool] | None = None

    def names(self, type_url: str) -> Mapping[str, object]:
        return self.resources.by_type.get(type_url, {})

    def layers(self, interner: Interner) -> dict[str, Layer]:
        if self._interned is None or self._interned[0] is not interner:
            layers = {
                type_url: Layer({name: interner.resource(type_url, name, message)
                                 for name, message in by_name.items()})
                for type_url, by_name in self.resources.by_type.items() if by_name
            }
            self._interned = (interner, layers)
            self._references = None
        return self._interned[1]

    def references(self, interner: Interner) -> tuple[dict[str, str], dict[str, frozenset[str]], bool]:
        """The EDS names of its clusters, the RDS names of its listeners, and whether they resolve within
        the part (then snapshot.consistency_errors need not check them again for every shape)."""
        layers = self.layers(interner)
        if self._references is None:
            clusters, listeners = layers.get(CLUSTER), layers.get(LISTENER)
            eds = _eds_names(clusters.resources) if clusters is not None else {}
            rds = {name: rds_names(res.message)
                   for name, res in listeners.resources.items()} if listeners is not None else {}
            endpoints = layers.get(ENDPOINT)
            consistent = not any(rds.values()) and all(
                endpoints is not None and ref in endpoints.resources for ref in eds.values())
            self._references = (eds, rds, consistent)
        return self._references


class SharedTranslation:
    """Shared parts of one policy generation by the model part they translate."""

    def __init__(self) -> None:
        self._parts: dict[object, SharedPart] = {}

    def part(self, key: object, make: Callable[[Resources], None]) -> SharedPart:
        found = self._parts.get(key)
        if found is None:
            resources = Resources()
            make(resources)
            if len(self._parts) >= MAX_ENTRIES:
                self._parts.clear()
            found = self._parts[key] = SharedPart(resources)
        return found


@dataclass
class Assembly:
    """What a proxy's snapshot is made of: shared parts (no two hold the same type) and its own resources."""

    shared: tuple[SharedPart, ...]
    own: Resources

    def collisions(self) -> list[str]:
        """Names the own resources share with a shared part (the reference raises on those)."""
        clashes = []
        for type_url in PUSH_ORDER:
            owners = [part.names(type_url) for part in self.shared if part.names(type_url)]
            own = self.own.by_type.get(type_url, {})
            if len(owners) > 1:
                raise AssertionError(f"two shared parts hold {type_url}")  # by construction, never
            if owners:
                clashes += [name for name in own if name in owners[0]]
        return clashes

    @property
    def by_type(self) -> dict[str, dict[str, Message]]:
        """The messages as one `Resources` holds them (for inspection and tests; not the fast path)."""
        merged: dict[str, dict[str, Message]] = {}
        for type_url in PUSH_ORDER:
            messages = dict(self.own.by_type.get(type_url, {}))
            for part in self.shared:
                messages.update(part.resources.by_type.get(type_url, {}))
            merged[type_url] = dict(sorted(messages.items()))
        return merged

    @property
    def origins(self) -> dict[tuple[str, str], tuple[Origin, ...]]:
        merged = dict(self.own.origins)
        for part in self.shared:
            merged.update(part.resources.origins)
        return merged

    def snapshot(self, interner: Interner, changed_at: float = 0.0) -> Snapshot:
        layers: dict[str, Layer] = {}
        origins: dict[tuple[str, str], tuple[Origin, ...]] = {}
        for part in self.shared:
            layers.update(part.layers(interner))
            origins.update(part.resources.origins)
        by_type: dict[str, Layered] = {}
        for type_url in PUSH_ORDER:
            messages = self.own.by_type.get(type_url, {})
            own = {name: interner.resource(type_url, name, messages[name]) for name in sorted(messages)}
            by_type[type_url] = Layered(layers.get(type_url), own)
        version = content_hash(*(f"{t}={by_type[t].type_version()}".encode() for t in PUSH_ORDER))
        shared_eds: dict[str, str] = {}
        shared_rds: dict[str, frozenset[str]] = {}
        verified = True
        for part in self.shared:
            eds, rds, consistent = part.references(interner)
            shared_eds, shared_rds = eds or shared_eds, rds or shared_rds
            verified = verified and consistent
        own_eds = _eds_names(by_type[CLUSTER].own)
        own_rds = {name: rds_names(res.message) for name, res in by_type[LISTENER].own.items()}
        return Snapshot(
            by_type, version,
            eds_names=Merged(shared_eds, own_eds, verified),
            rds_names=Merged(shared_rds, own_rds, verified),
            origins=Merged(origins, dict(self.own.origins)),
            changed_at=changed_at,
        )


def _eds_names(clusters: Mapping[str, Resource]) -> dict[str, str]:
    return {name: ref for name, res in clusters.items() if (ref := eds_name(res.message)) is not None}


def assemble(wide: PolicyWide, shared: SharedTranslation, proxy: ProxyIdentity) -> Assembly | None:
    """The proxy's snapshot parts, or None when this path does not apply (gateways: built in full)."""
    model: ProxyModel = wide.model(proxy)
    if model.gateway is not None or model.outbound_http is None:
        return None
    outbound = model.outbound_http
    parts = (
        shared.part(("clusters", Ref(model.clusters)), lambda r: add_clusters(r, model.clusters)),
        shared.part(("routes", Ref(outbound.virtual_hosts), outbound.outbound_policy),
                    lambda r: add_outbound_routes(r, outbound)),
        shared.part(("tcp", Ref(model.tcp_listeners)), lambda r: add_tcp_listeners(r, model.tcp_listeners)),
    )
    own = Resources()
    add_outbound(own, model)
    add_own(own, model)
    return Assembly(parts, own)


__all__ = ["Assembly", "Resource", "SharedTranslation", "assemble"]
