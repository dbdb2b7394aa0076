"""The change log behind the console's Changes view and its config diffs: the last reloads, what each one
changed (files, resources per type), which proxies received it and when each ACKed.

app.py calls `before()` ahead of publishing a reload's snapshots and `after()` once they are published;
the console's ticker calls `observe()` to fill in ACK times (status.py records them; a proxy's ACK of a
change is the newest ACK of every type once all its types are SYNCED on the change's snapshot).
Only the previous snapshot of each changed shape is kept, for the "diff against the previous version".
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.model.identity import ProxyIdentity
from controlplane.policystore import LoadResult
from controlplane.translate.resources import PUSH_ORDER, SHORT_NAMES
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.snapshot import Snapshot
from controlplane.xds.status import SYNCED, StatusRegistry

MAX_CHANGES = 50
# a reload touching thousands of resources is listed with this many names per type and a count
MAX_NAMES = 200

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


def diff_snapshots(old: Snapshot | None, new: Snapshot) -> dict[str, dict[str, list[str]]]:
    """Per short type name: resource names added, changed (other version) and removed."""
    out: dict[str, dict[str, list[str]]] = {}
    for type_url in PUSH_ORDER:
        before = {n: r.version for n, r in old.of_type(type_url).items()} if old is not None else {}
        after = {n: r.version for n, r in new.of_type(type_url).items()}
        kinds = {
            "added": sorted(set(after) - set(before)),
            "changed": sorted(n for n in set(after) & set(before) if after[n] != before[n]),
            "removed": sorted(set(before) - set(after)),
        }
        if any(kinds.values()):
            out[SHORT_NAMES[type_url]] = kinds
    return out


def _merge(into: dict[str, dict[str, list[str]]], more: Mapping[str, Mapping[str, list[str]]]) -> None:
    for type_name, kinds in more.items():
        target = into.setdefault(type_name, {"added": [], "changed": [], "removed": []})
        for kind, found in kinds.items():
            target[kind] = sorted(set(target[kind]) | set(found))


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

    def after(self, cache: SnapshotCache, registry: StatusRegistry, before: Mapping[ProxyIdentity, Snapshot],
              files: Fingerprint, loaded: LoadResult) -> Change:
        """Record one reload: `before` from `before()`, `files` the fingerprint it loaded."""
        self.kept, self.excluded = list(loaded.kept), list(loaded.excluded)
        change = Change(next(self._ids), time.time(), self._file_changes(files),
                        [str(d) for d in loaded.diagnostics], {}, {})
        changed: dict[ProxyIdentity, str] = {}
        shapes = cache.shapes()
        # forget the shapes whose last proxy left (the cache freed their snapshots too)
        self.previous = {i: snapshot for i, snapshot in self.previous.items() if i in shapes}
        for identity, (snapshot, _) in sorted(shapes.items(), key=lambda i: i[0].describe()):
            old = before.get(identity)
            if old is not None and old.version == snapshot.version:
                continue
            if old is not None:
                self.previous[identity] = old
            _merge(change.resources, diff_snapshots(old, snapshot))
            change.shapes[identity.describe()] = snapshot.version
            changed[identity] = snapshot.version
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
