"""Read-only mappings made of a shared layer plus a proxy's own overlay, referenced rather than copied.

A thousand distinct sidecars share one set of outbound clusters (xds/assembly.py); each snapshot holds a
`Layered` view over the shared `Layer` and its own few resources, so a new shape costs its own resources,
not a copy of two thousand dict entries. The SotW type version (snapshot.type_version: a hash of the
sorted `name\\0version` parts) is computed by hashing the layer's pre-framed bytes around the own parts,
so it is byte-identical to hashing the merged list, without building it.

A delta stream pushes per change, not per resource: `changed_between(old, new)` names what differs between
two layers, computed once per pair and shared by every stream that moves from one to the other, and
`Layer.delta_payload` (`sotw_payload`) splices a shape's own resources into the layer's pre-joined bytes
for a wildcard response.
"""

from __future__ import annotations

import bisect
import hashlib
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from controlplane.xds.snapshot import Resource

K = TypeVar("K")
V = TypeVar("V")


def _framed(part: bytes) -> bytes:
    # snapshot.content_hash frames each part with its length
    return len(part).to_bytes(8, "big") + part


class Layer:
    """Interned resources of one type that many snapshots share, sorted by name, with their hash parts."""

    def __init__(self, resources: Mapping[str, Resource]) -> None:
        self.resources: dict[str, Resource] = {name: resources[name] for name in sorted(resources)}
        self.parts = [f"{r.name}\x00{r.version}" for r in self.resources.values()]
        framed = [_framed(part.encode()) for part in self.parts]
        self.offsets = [0]
        for chunk in framed:
            self.offsets.append(self.offsets[-1] + len(chunk))
        self.framed = b"".join(framed)
        self.names = tuple(self.resources)
        # what changed since an older layer, by that layer (see changed_between); a few entries suffice:
        # streams move from the previous generation to this one
        self._changed: list[tuple[weakref.ref[Layer], frozenset[str]]] = []
        self._all: frozenset[str] | None = None
        # the layer's delta / SotW `resources` fields joined, with each resource's offset
        self._joined: dict[str, tuple[bytes, list[int]]] = {}

    def all_names(self) -> frozenset[str]:
        if self._all is None:
            self._all = frozenset(self.names)
        return self._all

    def delta_payload(self, own: Mapping[str, Resource]) -> bytes:
        """The `resources` fields of a DeltaDiscoveryResponse carrying every resource of this layer and of
        `own`, sorted by name: the layer's bytes are joined once, not once per stream."""
        return self._spliced("delta", own)

    def sotw_payload(self, own: Mapping[str, Resource]) -> bytes:
        """The same for a SotW DiscoveryResponse."""
        return self._spliced("sotw", own)

    def _spliced(self, kind: str, own: Mapping[str, Resource]) -> bytes:
        joined = self._joined.get(kind)
        if joined is None:
            fields = [r.delta_field if kind == "delta" else r.sotw_field for r in self.resources.values()]
            offsets = [0]
            for chunk in fields:
                offsets.append(offsets[-1] + len(chunk))
            joined = self._joined[kind] = (b"".join(fields), offsets)
        data, offsets = joined
        if not own:
            return data
        view = memoryview(data)
        chunks: list[bytes | memoryview] = []
        start = 0
        for name in sorted(own):
            at = bisect.bisect_left(self.names, name)
            resource = own[name]
            chunks += (view[offsets[start]:offsets[at]],
                       resource.delta_field if kind == "delta" else resource.sotw_field)
            start = at
        chunks.append(view[offsets[start]:])
        return b"".join(chunks)


MAX_CHANGED = 4


def changed_between(old: Layer | None, new: Layer | None) -> frozenset[str]:
    """Names whose resource differs between two layers (in one only, or at another version). Cached on
    `new`: the 500 streams of one push share one comparison."""
    if old is new:
        return frozenset()
    if old is None or new is None:
        layer = new if old is None else old
        assert layer is not None
        return layer.all_names()
    for ref, names in new._changed:
        if ref() is old:
            return names
    changed = {name for name, resource in new.resources.items()
               if (before := old.resources.get(name)) is None
               or (before is not resource and before.version != resource.version)}
    changed.update(name for name in old.resources if name not in new.resources)
    found = frozenset(changed)
    new._changed = [(ref, names) for ref, names in new._changed if ref() is not None][-(MAX_CHANGED - 1):]
    new._changed.append((weakref.ref(old), found))
    return found


class Layered(Mapping[str, "Resource"]):
    """One type's resources of a snapshot: a shared `Layer` (or none) plus the shape's own resources.
    Names never collide (the assembler checks). Iteration is by name, like Snapshot.build's dicts."""

    __slots__ = ("_names", "_version", "own", "shared")

    def __init__(self, shared: Layer | None, own: Mapping[str, Resource]) -> None:
        self.shared = shared
        self.own = {name: own[name] for name in sorted(own)}
        self._names: tuple[str, ...] | None = None
        self._version: str | None = None

    def __getitem__(self, name: str) -> Resource:
        found = self.own.get(name)
        if found is not None:
            return found
        if self.shared is None:
            raise KeyError(name)
        return self.shared.resources[name]

    def get(self, name: str, default: Resource | None = None) -> Resource | None:  # type: ignore[override]
        # Mapping.get goes through __getitem__ and a KeyError for every miss; scans call this a lot
        found = self.own.get(name)
        if found is None and self.shared is not None:
            found = self.shared.resources.get(name)
        return default if found is None else found

    def __contains__(self, name: object) -> bool:
        return name in self.own or (self.shared is not None and name in self.shared.resources)

    def __len__(self) -> int:
        return len(self.own) + (len(self.shared.resources) if self.shared is not None else 0)

    def __iter__(self) -> Iterator[str]:
        if self._names is None:
            if self.shared is None:
                self._names = tuple(self.own)
            elif not self.own:
                self._names = self.shared.names
            else:  # a nearly sorted concatenation: timsort merges it in linear time
                self._names = tuple(sorted((*self.shared.names, *self.own)))
        return iter(self._names)

    def type_version(self) -> str:
        """snapshot.type_version of all the resources, from the layer's pre-framed bytes."""
        if self._version is None:
            self._version = self._hash()
        return self._version

    def _hash(self) -> str:
        own = [f"{r.name}\x00{r.version}" for r in self.own.values()]
        if self.shared is None or not self.shared.parts:
            if not own:
                return "empty"
            digest = hashlib.sha256()
            for part in sorted(own):
                digest.update(_framed(part.encode()))
            return digest.hexdigest()[:16]
        layer = self.shared
        digest = hashlib.sha256()
        view = memoryview(layer.framed)
        start = 0
        for part in sorted(own):
            at = bisect.bisect_left(layer.parts, part)
            digest.update(view[layer.offsets[start]:layer.offsets[at]])
            digest.update(_framed(part.encode()))
            start = at
        digest.update(view[layer.offsets[start]:])
        return digest.hexdigest()[:16]


class Merged(Mapping[K, V]):
    """A read-only union of a shared mapping and an own one (no common keys), e.g. a snapshot's origins.
    `verified`: the shared part was checked once (snapshot.consistency_errors checks only the own part)."""

    __slots__ = ("own", "shared", "verified")

    def __init__(self, shared: Mapping[K, V], own: Mapping[K, V], verified: bool = False) -> None:
        self.shared, self.own, self.verified = shared, own, verified

    def __getitem__(self, key: K) -> V:
        if key in self.own:
            return self.own[key]
        return self.shared[key]

    def __contains__(self, key: object) -> bool:
        return key in self.own or key in self.shared

    def __len__(self) -> int:
        return len(self.shared) + len(self.own)

    def __iter__(self) -> Iterator[K]:
        yield from self.shared
        yield from self.own

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Merged) and other.shared is self.shared:
            return bool(other.own == self.own)
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]
