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
makes a new one, and the old one goes with the last snapshot that referenced its resources. Within a
generation parts are found by the identity of the model part (cheap: every shape asks). Across
generations they are found by value: a reload's new translation is handed the previous one, and a part
whose model value is equal to one the previous generation translated (the 1,000 clusters after an edit of
one route, a sidecar's own listeners) is taken over as it is, with its interned bytes and layers, so an
edit translates and serializes only the parts it changed and unchanged layers stay the same objects
(their delta diffs are empty without a look). Translation is a pure function of the model part, so an
equal value means the same resources. Inside the route table, each virtual host is translated once per
value too (`SharedTranslation.virtual_host`), so an edit of one route translates one virtual host and
joins the table from the 999 translated before. Model values hash once (model/hashing.py): with the
model stage carrying unchanged clusters as the same objects, comparing a part's value is cheap.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from envoy.config.route.v3 import route_components_pb2 as rc
from google.protobuf.message import Message

from controlplane.model.hashing import Hashed
from controlplane.model.identity import ProxyIdentity
from controlplane.model.policywide import MAX_ENTRIES, PolicyWide
from controlplane.model.proxy_model import ProxyModel, VirtualHost
from controlplane.model.tracing import Ref
from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, Origin, Resources
from controlplane.translate.routes import translate_virtual_host
from controlplane.translate.translator import (
    add_clusters,
    add_outbound,
    add_outbound_routes,
    add_own,
    add_tcp_listeners,
    own_inputs,
)
from controlplane.xds.layers import Layer, Layered, Merged
from controlplane.xds.snapshot import Interner, Resource, Snapshot, content_hash, eds_name, rds_names

# Small shared parts kept per generation (see SharedTranslation.part).
MAX_SMALL_PARTS = 256
# Translated virtual hosts kept per generation: every service port of every route table variant
# (namespaces see other short names); cleared when full.
MAX_VIRTUAL_HOSTS = 50_000


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

    def interned(self, interner: Interner) -> dict[str, dict[str, Resource]]:
        """Its resources, interned: for a small part that joins a snapshot's own overlay."""
        return {type_url: layer.resources for type_url, layer in self.layers(interner).items()}

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
    """Shared parts of one policy generation by the model part they translate; `previous` (the last
    generation's) lends the parts whose model value did not change."""

    def __init__(self, previous: SharedTranslation | None = None) -> None:
        self._parts: dict[object, SharedPart] = {}
        self._small: dict[object, SharedPart] = {}
        # this generation's parts by model value, for the next generation to take over. Weakly: a part
        # lives while a snapshot holds it (Snapshot.parts) or this generation's tables above do, so the
        # own parts of proxies that left (unique labels on every reconnect) are not kept by the memo
        self._by_value: weakref.WeakValueDictionary[Hashed, SharedPart] = weakref.WeakValueDictionary()
        self._carried = previous._by_value if previous is not None else None
        # translated virtual hosts by model value: an edit of one route rebuilds the route table from
        # the 999 virtual hosts translated before and the one it changed (the previous generation's dict
        # only, so no chain of generations builds up)
        self._virtual_hosts: dict[VirtualHost, rc.VirtualHost] = {}
        self._lent_virtual_hosts = previous._virtual_hosts if previous is not None else {}
        self._origins: dict[tuple[int, ...], tuple[tuple[SharedPart, ...], dict[tuple[str, str],
                                                                              tuple[Origin, ...]]]] = {}

    def origins(self, parts: tuple[SharedPart, ...]) -> dict[tuple[str, str], tuple[Origin, ...]]:
        """The origins of a combination of layer parts, merged once (shapes reference the one dict)."""
        key = tuple(id(part) for part in parts)
        found = self._origins.get(key)
        if found is None or found[0] != parts:
            merged: dict[tuple[str, str], tuple[Origin, ...]] = {}
            for part in parts:
                merged.update(part.resources.origins)
            if len(self._origins) >= MAX_ENTRIES:
                self._origins.clear()
            found = self._origins[key] = (parts, merged)
        return found[1]

    def settle(self) -> None:
        """Forget what the previous generation lent (see PolicyWide.settle)."""
        self._carried = None
        self._lent_virtual_hosts = {}

    def virtual_host(self, virtual_host: VirtualHost) -> rc.VirtualHost:
        """`translate_virtual_host(virtual_host)`, translated once per value (never mutated after)."""
        found = self._virtual_hosts.get(virtual_host)
        if found is None:
            found = self._lent_virtual_hosts.get(virtual_host)
            if found is None:
                found = translate_virtual_host(virtual_host)
            if len(self._virtual_hosts) >= MAX_VIRTUAL_HOSTS:
                self._virtual_hosts.clear()
            self._virtual_hosts[virtual_host] = found
        return found

    def part(self, key: object, make: Callable[[Resources], None], small: bool = False,
             value: Callable[[], object] | None = None) -> SharedPart:
        """The part for `key`, made once. `value()`: everything `make` reads, as a hashable value; a part
        the previous generation made from an equal value is taken over instead of made. Small parts
        (cheap to remake, and distinct for proxies whose labels reach their telemetry) are kept fewer:
        unique labels on every reconnect stay bounded."""
        parts, limit = (self._small, MAX_SMALL_PARTS) if small else (self._parts, MAX_ENTRIES)
        found = parts.get(key)
        if found is None:
            found = self.by_value(value(), make) if value is not None else _made(make)
            if len(parts) >= limit:
                parts.clear()
            parts[key] = found
        return found

    def by_value(self, value: object, make: Callable[[Resources], None]) -> SharedPart:
        """The part made from `value` (everything `make` reads, hashable): this generation's or the
        previous one's when either made it from an equal value, else made now. A proxy's own part goes
        here directly: every shape asks once per generation, so no identity table would help."""
        try:
            key = Hashed(value)
        except TypeError:  # some part of the value cannot be hashed: nothing to share it by
            return _made(make)
        found = self._by_value.get(key)
        if found is None and self._carried is not None:
            found = self._carried.get(key)
        if found is None:
            found = _made(make)
        self._by_value[key] = found
        return found



def _made(make: Callable[[Resources], None]) -> SharedPart:
    resources = Resources()
    make(resources)
    return SharedPart(resources)


@dataclass
class Assembly:
    """What a proxy's snapshot is made of: shared parts that become layers (no two hold the same type),
    small shared parts that join the overlay (e.g. the outbound listener: equal for every sidecar on the
    same outbound address), and its own resources."""

    shared: tuple[SharedPart, ...]
    own: Resources
    small: tuple[SharedPart, ...] = ()
    translation: SharedTranslation | None = None

    def collisions(self) -> list[str]:
        """Names the own resources share with a shared part (the reference raises on those)."""
        clashes = []
        for type_url in PUSH_ORDER:
            owners = [part.names(type_url) for part in self.shared if part.names(type_url)]
            own = list(self.own.by_type.get(type_url, {}))
            for part in self.small:
                own += part.names(type_url)
            clashes += [name for name, count in Counter(own).items() if count > 1]
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
            for part in (*self.shared, *self.small):
                messages.update(part.resources.by_type.get(type_url, {}))
            merged[type_url] = dict(sorted(messages.items()))
        return merged

    @property
    def origins(self) -> dict[tuple[str, str], tuple[Origin, ...]]:
        merged = dict(self.own.origins)
        for part in (*self.shared, *self.small):
            merged.update(part.resources.origins)
        return merged

    def snapshot(self, interner: Interner, changed_at: float = 0.0) -> Snapshot:
        layers: dict[str, Layer] = {}
        for part in self.shared:
            layers.update(part.layers(interner))
        if self.translation is not None:
            origins = self.translation.origins(self.shared)
        else:
            origins = {key: value for part in self.shared for key, value in part.resources.origins.items()}
        own_origins = dict(self.own.origins)
        small = [part.interned(interner) for part in self.small]
        for part in self.small:
            own_origins.update(part.resources.origins)
        by_type: dict[str, Layered] = {}
        for type_url in PUSH_ORDER:
            messages = self.own.by_type.get(type_url, {})
            own = {name: interner.resource(type_url, name, message) for name, message in messages.items()}
            for interned in small:
                own.update(interned.get(type_url, {}))
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
            origins=Merged(origins, own_origins),
            changed_at=changed_at,
            parts=(*self.shared, *self.small),
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
        shared.part(("clusters", Ref(model.clusters)), lambda r: add_clusters(r, model.clusters),
                    value=lambda: ("clusters", model.clusters)),
        shared.part(("routes", Ref(outbound.virtual_hosts), outbound.outbound_policy),
                    lambda r: add_outbound_routes(r, outbound, shared.virtual_host),
                    value=lambda: ("routes", outbound.virtual_hosts, outbound.outbound_policy)),
        shared.part(("tcp", Ref(model.tcp_listeners)), lambda r: add_tcp_listeners(r, model.tcp_listeners),
                    value=lambda: ("tcp", model.tcp_listeners)),
    )
    # the passthrough cluster and outbound listener read only these parts of the model
    def listener_key(telemetry: object) -> tuple[object, ...]:
        return ("outbound", outbound.address, outbound.outbound_policy, outbound.forwards_by_authority,
                telemetry, model.mesh_connect_timeout_ms, model.mesh_origins)

    small = (
        shared.part(listener_key(Ref(model.telemetry)), lambda r: add_outbound(r, model), small=True,
                    value=lambda: listener_key(model.telemetry)),
        # the listeners on the proxy's own addresses and its inbound side: its own, but equal to the
        # previous generation's after most edits (they read only what `own_inputs` lists)
        shared.by_value(own_inputs(model), lambda r: add_own(r, model)),
    )
    # filled by the caller with what is not translated from the model (per-identity secrets)
    own = Resources()
    return Assembly(parts, own, small, shared)


__all__ = ["Assembly", "Resource", "SharedTranslation", "assemble"]
