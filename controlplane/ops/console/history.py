"""The change log behind the console's Changes view and its config diffs: the last reloads, what each one
changed (files, resources per type), which proxies received it and when each ACKed.

app.py calls `before()` ahead of publishing a reload's snapshots and `after()` once they are published;
the console's ticker calls `observe()` to fill in ACK times (status.py records them; a proxy's ACK of a
change is the newest ACK of every type once all its types are SYNCED on the change's snapshot).
Only the previous snapshot of each changed shape is kept, for the "diff against the previous version".
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.model.identity import ProxyIdentity
from controlplane.policystore import LoadResult
from controlplane.translate.resources import PUSH_ORDER, SHORT_NAMES
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.layers import Layer, Layered
from controlplane.xds.snapshot import Resource, Snapshot
from controlplane.xds.status import SYNCED, StatusRegistry

MAX_CHANGES = 50
# a reload touching thousands of resources is listed with this many names per type and a count
MAX_NAMES = 200
# shapes compared between two yields to the event loop (ChangeLog.after)
SHAPES_PER_STEP = 50

# (path, mtime_ns, size) of each policy file, as PolicyStore.fingerprint() gives them
Fingerprint = Iterable[tuple[str, int, int]]


@dataclass
class Delivery:
    """One proxy that was sent a change: when it ACKed it, or why it never will."""

    node: str
    stream: int
    shape: str
    version: str
    acked_at: float | None = None
    # "superseded" (a newer change reached the shape first) or "disconnected"
    outcome: str = ""

    def to_json(self, at: float) -> dict[str, Any]:
        return {"node": self.node, "stream": self.stream, "shape": self.shape,
                "snapshot_version": self.version, "acked_at": self.acked_at,
                "ack_seconds": None if self.acked_at is None else max(0.0, self.acked_at - at),
                "outcome": self.outcome or ("acked" if self.acked_at is not None else "pending")}


@dataclass
class Change:
    id: int
    at: float
    files: dict[str, str]
    diagnostics: list[str]
    resources: dict[str, dict[str, list[str]]]
    shapes: dict[str, str]
    deliveries: list[Delivery] = field(default_factory=list)

    def pending(self) -> bool:
        return any(d.acked_at is None and not d.outcome for d in self.deliveries)

    def to_json(self) -> dict[str, Any]:
        counts = {t: {k: len(v) for k, v in kinds.items()} for t, kinds in self.resources.items()}
        return {"id": self.id, "at": self.at, "files": self.files, "diagnostics": self.diagnostics,
                "resources": {t: {k: v[:MAX_NAMES] for k, v in kinds.items()}
                              for t, kinds in self.resources.items()},
                "counts": counts, "shapes": self.shapes,
                "proxies_total": len(self.deliveries),
                "acked": sum(d.acked_at is not None for d in self.deliveries),
                # with a thousand proxies, the first ones (by node id) stand for the rest
                "proxies": [d.to_json(self.at) for d in self.deliveries[:MAX_NAMES]]}


Kinds = dict[str, set[str]]  # "added" / "changed" / "removed" -> resource names


def _diff_maps(before: Mapping[str, Resource], after: Mapping[str, Resource],
               names: Iterable[str] | None = None) -> Kinds:
    """Added, changed and removed names between two mappings (only among `names` if given)."""
    if names is None:
        old = {n: r.version for n, r in before.items()}
        new = {n: r.version for n, r in after.items()}
    else:
        wanted = list(names)
        old = {n: before[n].version for n in wanted if n in before}
        new = {n: after[n].version for n in wanted if n in after}
    return {"added": set(new) - set(old),
            "changed": {n for n in set(new) & set(old) if new[n] != old[n]},
            "removed": set(old) - set(new)}


class _LayerDiffs:
    """Diffs of snapshots assembled from shared layers (xds/layers.py), computed once per pair of layers.

    After an edit every shape's snapshot references the same new shared layer: comparing each shape's
    two thousand resources again per shape cost ~1 s at 500 shapes on the event loop. A pair of layers is
    compared once; per shape only its own overlay is compared."""

    def __init__(self) -> None:
        self._pairs: dict[tuple[int, int], tuple[Layer | None, Layer | None, Kinds]] = {}

    def diff(self, before: Mapping[str, Resource],
             after: Mapping[str, Resource]) -> tuple[Kinds, Kinds | None]:
        """(this shape's own differences, the shared layers' differences or None if the same)."""
        if not isinstance(before, Layered) or not isinstance(after, Layered):
            return _diff_maps(before, after), None
        own = set(before.own) | set(after.own)
        if before.shared is after.shared:
            return _diff_maps(before, after, own), None
        old_names = before.shared.resources if before.shared is not None else {}
        new_names = after.shared.resources if after.shared is not None else {}
        if any(name in old_names or name in new_names for name in own):
            # a name that moved between layer and overlay: compare the whole mappings
            return _diff_maps(before, after), None
        return _diff_maps(before, after, own), self._pair(before.shared, after.shared)

    def _pair(self, old: Layer | None, new: Layer | None) -> Kinds:
        key = (id(old), id(new))
        found = self._pairs.get(key)
        if found is None or found[0] is not old or found[1] is not new:
            found = self._pairs[key] = (old, new, _diff_maps(old.resources if old else {},
                                                             new.resources if new else {}))
        return found[2]


def diff_snapshots(old: Snapshot | None, new: Snapshot,
                   layers: _LayerDiffs | None = None) -> dict[str, dict[str, list[str]]]:
    """Per short type name: resource names added, changed (other version) and removed."""
    layers = layers if layers is not None else _LayerDiffs()
    out: dict[str, dict[str, list[str]]] = {}
    for type_url, kinds in _diff_sets(old, new, layers).items():
        if any(kinds.values()):
            out[SHORT_NAMES[type_url]] = {kind: sorted(found) for kind, found in kinds.items()}
    return out


def _diff_sets(old: Snapshot | None, new: Snapshot, layers: _LayerDiffs) -> dict[str, Kinds]:
    out: dict[str, Kinds] = {}
    for type_url in PUSH_ORDER:
        if old is None:
            out[type_url] = _diff_maps({}, new.of_type(type_url))
            continue
        own, shared = layers.diff(old.of_type(type_url), new.of_type(type_url))
        if shared is not None:
            own = {kind: own[kind] | shared[kind] for kind in own}
        out[type_url] = own
    return out


class ChangeLog:
    def __init__(self, size: int = MAX_CHANGES) -> None:
        self._ids = itertools.count(1)
        self.changes: deque[Change] = deque(maxlen=size)
        self._files: dict[str, tuple[int, int]] = {}
        # per shape: the snapshot it had before its last change (for diffs)
        self.previous: dict[ProxyIdentity, Snapshot] = {}
        self.generation = 0
        # the last reload's files whose last valid version is served, and those left out
        self.kept: list[str] = []
        self.excluded: list[str] = []

    @staticmethod
    def before(cache: SnapshotCache) -> dict[ProxyIdentity, Snapshot]:
        return {identity: snapshot for identity, (snapshot, _) in cache.shapes().items()}

    async def after(self, cache: SnapshotCache, registry: StatusRegistry,
                    before: Mapping[ProxyIdentity, Snapshot], files: Fingerprint,
                    loaded: LoadResult) -> Change:
        """Record one reload: `before` from `before()`, `files` the fingerprint it loaded. Yields to the
        event loop every `SHAPES_PER_STEP` shapes (~0.2 ms each: 500 shapes in one go held the loop
        ~100 ms)."""
        steps = self._record(cache, registry, before, files, loaded)
        while (change := _step(steps)) is None:
            await asyncio.sleep(0)
        return change

    def _record(self, cache: SnapshotCache, registry: StatusRegistry,
                before: Mapping[ProxyIdentity, Snapshot], files: Fingerprint,
                loaded: LoadResult) -> Generator[None, None, Change]:
        self.kept, self.excluded = list(loaded.kept), list(loaded.excluded)
        change = Change(next(self._ids), time.time(), self._file_changes(files),
                        [str(d) for d in loaded.diagnostics], {}, {})
        changed: dict[ProxyIdentity, str] = {}
        shapes = cache.shapes()
        # forget the shapes whose last proxy left (the cache freed their snapshots too)
        self.previous = {i: snapshot for i, snapshot in self.previous.items() if i in shapes}
        layers = _LayerDiffs()
        found: dict[str, Kinds] = {}
        for index, (identity, (snapshot, _)) in enumerate(sorted(shapes.items(),
                                                                 key=lambda i: i[0].describe())):
            if index and index % SHAPES_PER_STEP == 0:
                yield
            old = before.get(identity)
            if old is not None and old.version == snapshot.version:
                continue
            if old is not None:
                self.previous[identity] = old
            for type_url, kinds in _diff_sets(old, snapshot, layers).items():
                into = found.setdefault(type_url, {"added": set(), "changed": set(), "removed": set()})
                for kind, names in kinds.items():
                    into[kind] |= names
            change.shapes[identity.describe()] = snapshot.version
            changed[identity] = snapshot.version
        change.resources = {SHORT_NAMES[t]: {kind: sorted(names) for kind, names in kinds.items()}
                            for t, kinds in found.items() if any(kinds.values())}
        for status in sorted(registry.streams.values(), key=lambda s: (s.node_id, s.stream_id)):
            version = changed.get(status.identity)
            if version is not None:
                change.deliveries.append(Delivery(status.node_id, status.stream_id,
                                                  status.identity.describe(), version))
        last = self.changes[-1].diagnostics if self.changes else []
        if change.files or change.shapes or change.diagnostics != last:
            # a reload that changed nothing (the watcher and an explicit reload seeing one edit) is not news
            self.changes.append(change)
        self.generation += 1
        return change

    def _file_changes(self, files: Fingerprint) -> dict[str, str]:
        now = {path: (mtime, size) for path, mtime, size in files}
        out = {path: "added" for path in now if path not in self._files}
        out.update({path: "modified" for path in now
                    if path in self._files and now[path] != self._files[path]})
        out.update({path: "deleted" for path in self._files if path not in now})
        self._files = now
        return dict(sorted(out.items()))

    def observe(self, registry: StatusRegistry, cache: SnapshotCache) -> bool:
        """Fill in the ACK times of pending deliveries; True when any delivery changed."""
        moved = False
        current = {identity.describe(): snapshot.version
                   for identity, (snapshot, _) in cache.shapes().items()}
        for change in self.changes:
            if not change.pending():
                continue
            for delivery in change.deliveries:
                if delivery.acked_at is None and not delivery.outcome:
                    moved |= self._observe_one(delivery, registry, current)
        if moved:
            self.generation += 1
        return moved

    @staticmethod
    def _observe_one(delivery: Delivery, registry: StatusRegistry, current: Mapping[str, str]) -> bool:
        status = registry.streams.get(delivery.stream)
        if status is None:
            delivery.outcome = "disconnected"
            return True
        types = status.types.values()
        if status.snapshot_version == delivery.version and types and all(
                t.state(delivery.version) == SYNCED for t in types):
            delivery.acked_at = max(t.acked_at or 0.0 for t in types) or time.time()
            return True
        if current.get(delivery.shape, delivery.version) != delivery.version:
            delivery.outcome = "superseded"
            return True
        return False

    def to_json(self, limit: int = MAX_CHANGES) -> list[dict[str, Any]]:
        return [change.to_json() for change in reversed(list(self.changes)[-limit:])]


def _step(steps: Generator[None, None, Change]) -> Change | None:
    """Advance the recording by one step: the Change once it is done, else None."""
    try:
        next(steps)
    except StopIteration as done:
        return done.value
    return None
