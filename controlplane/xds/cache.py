"""The snapshot cache: one snapshot per proxy shape, and watches that wake streams when it changes.

The cache and the streams meet at one narrow interface (go-control-plane's): a stream opens a `Watch` for
its proxy identity, reads `watch.snapshot` and awaits `watch.changed()`. Streams never queue snapshots:
a woken stream reads the newest one, so a slow proxy skips intermediate versions (latest wins).

Proxies with equal identity share one snapshot; a shape's snapshot is dropped when its last stream goes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from controlplane.model.identity import ProxyIdentity
from controlplane.translate.resources import Resources
from controlplane.xds.assembly import Assembly
from controlplane.xds.snapshot import Interner, Snapshot

log = logging.getLogger(__name__)

# Produces the resources of one proxy shape from the current policy (build + translate). Pure. Either
# the shape's resources (the full rebuild) or an `Assembly` of shared, interned pieces (xds/assembly.py).
ResourceFactory = Callable[[ProxyIdentity], Resources | Assembly]


@dataclass
class _Shape:
    snapshot: Snapshot
    watches: set[Watch] = field(default_factory=set)


class Watch:
    """A stream's view of its shape's snapshot."""

    def __init__(self, cache: SnapshotCache, identity: ProxyIdentity) -> None:
        self._cache = cache
        self.identity = identity
        self._event = asyncio.Event()

    @property
    def snapshot(self) -> Snapshot:
        return self._cache.snapshot(self.identity)

    def notify(self) -> None:
        self._event.set()

    async def changed(self) -> None:
        """Return once the shape's snapshot has been replaced since the last call."""
        await self._event.wait()
        self._event.clear()

    def cancel(self) -> None:
        self._cache._unwatch(self)


class SnapshotCache:
    def __init__(self, factory: ResourceFactory) -> None:
        self._factory = factory
        self._shapes: dict[ProxyIdentity, _Shape] = {}
        self._changed_at = 0.0
        self.interner = Interner()

    def watch(self, identity: ProxyIdentity) -> Watch:
        shape = self._shapes.get(identity)
        if shape is None:
            shape = self._shapes[identity] = _Shape(self._make(identity, previous=None))
        made = Watch(self, identity)
        shape.watches.add(made)
        return made

    def _unwatch(self, made: Watch) -> None:
        shape = self._shapes.get(made.identity)
        if shape is None:
            return
        shape.watches.discard(made)
        if not shape.watches:
            # no stream left for this shape: free its snapshot (and, through the interner, its bytes)
            del self._shapes[made.identity]

    def snapshot(self, identity: ProxyIdentity) -> Snapshot:
        shape = self._shapes.get(identity)
        return shape.snapshot if shape else self._make(identity, previous=None)

    def shapes(self) -> dict[ProxyIdentity, tuple[Snapshot, int]]:
        return {identity: (s.snapshot, len(s.watches)) for identity, s in self._shapes.items()}

    def set_factory(self, factory: ResourceFactory, changed_at: float = 0.0) -> int:
        """Rebuild every live shape from a new policy; wake the streams whose snapshot changed.
        `changed_at` (time.monotonic()) is when the change that led here was seen. Returns how many
        shapes changed."""
        self._factory = factory
        self._changed_at = changed_at
        return sum(self._refresh(identity) for identity in list(self._shapes))

    async def publish(self, factory: ResourceFactory, changed_at: float = 0.0) -> int:
        """`set_factory`, yielding to the event loop between shapes: with many proxy shapes a rebuild takes
        a while, and streams keep answering ACKs (and get their new snapshot) meanwhile. A shape that
        connects during the rebuild is built from the new factory already."""
        self._factory = factory
        self._changed_at = changed_at
        changed = 0
        for identity in list(self._shapes):
            changed += self._refresh(identity)
            await asyncio.sleep(0)
        return changed

    def _refresh(self, identity: ProxyIdentity) -> bool:
        shape = self._shapes.get(identity)
        if shape is None:  # its last stream left meanwhile
            return False
        fresh = self._make(identity, previous=shape.snapshot)
        if fresh.version == shape.snapshot.version:
            if fresh.origins != shape.snapshot.origins:
                # same bytes, but the policy objects moved in their files: no push, fresh file:line
                shape.snapshot = dataclasses.replace(shape.snapshot, origins=fresh.origins)
            return False
        shape.snapshot = fresh
        for made in shape.watches:
            made.notify()
        return True

    def _make(self, identity: ProxyIdentity, previous: Snapshot | None) -> Snapshot:
        """Build a shape's snapshot; never publish a broken one: on failure keep the previous (or, for a
        new shape, serve an empty one) and say why in the log."""
        try:
            made = self._factory(identity)
            if isinstance(made, Assembly):
                fresh = made.snapshot(self.interner, self._changed_at)
            else:
                fresh = Snapshot.build(made, self.interner, self._changed_at)
        except Exception:
            log.exception("building the snapshot for %s failed; keeping the last good one",
                          identity.describe())
            return previous or Snapshot.empty()
        errors = fresh.consistency_errors()
        if errors:
            log.error("refusing an inconsistent snapshot for %s (keeping the last good one): %s",
                      identity.describe(), "; ".join(errors))
            return previous or Snapshot.empty()
        return fresh
