"""The snapshot cache: one snapshot per proxy shape, and watches that wake streams when it changes.

The cache and the streams meet at one narrow interface (go-control-plane's): a stream opens a `Watch` for
its proxy identity, reads `watch.snapshot` and awaits `watch.changed()`. Streams never queue snapshots:
a woken stream reads the newest one, so a slow proxy skips intermediate versions (latest wins).

Proxies with equal identity share one snapshot; a shape's snapshot is dropped when its last stream goes.

Building a snapshot (assembly, a new certificate) takes ~20 ms; a burst of 500 new proxies or a reload of
500 shapes done on the event loop delayed health checks and ACKs by seconds. The async paths (`prepare`,
`publish`) build in one worker thread (`_WORKER`) and only install the results on the loop. One thread,
not several: the factory's policy-wide memo (xds/assembly.py) and the interner are then only ever
filled by one thread at a time, and the second core is left to the other streams' work. Results are the
same pure values the loop would have computed (same versions: content hashes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from controlplane.model.identity import ProxyIdentity
from controlplane.translate.resources import Resources
from controlplane.xds.assembly import Assembly
from controlplane.xds.snapshot import Interner, Snapshot

log = logging.getLogger(__name__)

T = TypeVar("T")

# Produces the resources of one proxy shape from the current policy (build + translate). Pure. Either
# the shape's resources (the full rebuild) or an `Assembly` of shared, interned pieces (xds/assembly.py).
ResourceFactory = Callable[[ProxyIdentity], Resources | Assembly]

# Shared by every cache of the process (tests make many): an idle thread costs nothing, one per cache would.
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-build")
# shapes rebuilt per trip to the worker on publish: ~20 ms each, so the loop applies results (and wakes
# streams) every few hundred ms at most, without a thread round trip per shape
PUBLISH_BATCH = 8
# built but not yet watched snapshots kept at most (a stream that was refused before it watched)
MAX_PREPARED = 4096


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
        # bumped by every new factory: a snapshot prepared under an older one is not used
        self._generation = 0
        self._prepared: dict[ProxyIdentity, tuple[int, Snapshot]] = {}
        self._building: dict[ProxyIdentity, tuple[int, asyncio.Future[Snapshot]]] = {}

    async def prepare(self, identity: ProxyIdentity) -> None:
        """Build a new shape's snapshot in the worker thread, so that `watch` finds it ready and does not
        build it on the event loop. Proxies of one shape connecting together share one build; a burst of
        new shapes queues on the worker while the loop keeps serving."""
        while identity not in self._shapes:
            generation = self._generation
            prepared = self._prepared.get(identity)
            if prepared is not None and prepared[0] == generation:
                return
            building = self._building.get(identity)
            if building is None or building[0] != generation:
                future = asyncio.get_running_loop().run_in_executor(
                    _WORKER, self._make_with, self._factory, self._changed_at, identity)
                building = self._building[identity] = (generation, future)
                # forgotten once done even when no caller is left waiting (its stream went away)
                future.add_done_callback(functools.partial(self._built, identity, building))
            snapshot = await asyncio.shield(building[1])
            if generation == self._generation:
                if len(self._prepared) >= MAX_PREPARED:
                    self._prepared.clear()
                self._prepared[identity] = (generation, snapshot)
                return
            # a new policy was published meanwhile: build again from it

    def _built(self, identity: ProxyIdentity, entry: tuple[int, asyncio.Future[Snapshot]],
               _: asyncio.Future[Snapshot]) -> None:
        if self._building.get(identity) is entry:
            del self._building[identity]

    async def in_worker(self, work: Callable[[], T]) -> T:
        """Run `work` in the thread that builds snapshots, e.g. certificate renewal: issuing there too
        keeps one certificate per identity (a build and a renewal never issue for one identity at once)."""
        return await asyncio.get_running_loop().run_in_executor(_WORKER, work)

    def forget_prepared(self, identity: ProxyIdentity) -> None:
        """Drop a prepared snapshot no stream watched (the stream was refused or ended first)."""
        self._prepared.pop(identity, None)

    def watch(self, identity: ProxyIdentity) -> Watch:
        shape = self._shapes.get(identity)
        if shape is None:
            prepared = self._prepared.pop(identity, None)
            if prepared is not None and prepared[0] == self._generation:
                made_snapshot = prepared[1]
            else:  # not prepared (a caller that did not await `prepare`): build it here
                made_snapshot = self._make(identity, previous=None)
            shape = self._shapes[identity] = _Shape(made_snapshot)
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
        self._use(factory, changed_at)
        return sum(self._refresh(identity) for identity in list(self._shapes))

    async def publish(self, factory: ResourceFactory, changed_at: float = 0.0) -> int:
        """`set_factory`, with the shapes built in the worker thread a batch at a time: with many proxy
        shapes a rebuild takes a while, and streams keep answering ACKs (and get their new snapshot as
        soon as their batch is done) meanwhile. A shape that connects during the rebuild is built from the
        new factory already."""
        self._use(factory, changed_at)
        loop = asyncio.get_running_loop()
        identities = list(self._shapes)
        changed = 0
        for start in range(0, len(identities), PUBLISH_BATCH):
            batch = [(identity, shape.snapshot) for identity in identities[start:start + PUBLISH_BATCH]
                     if (shape := self._shapes.get(identity)) is not None]
            built = await loop.run_in_executor(_WORKER, self._make_batch, factory, changed_at, batch)
            for (identity, previous), fresh in zip(batch, built, strict=True):
                changed += self._install(identity, previous, fresh)
        return changed

    def _use(self, factory: ResourceFactory, changed_at: float) -> None:
        self._factory = factory
        self._changed_at = changed_at
        self._generation += 1
        self._prepared.clear()

    def _make_batch(self, factory: ResourceFactory, changed_at: float,
                    batch: list[tuple[ProxyIdentity, Snapshot]]) -> list[Snapshot]:
        """In the worker thread: the fresh snapshots of `batch` (identity, previous snapshot)."""
        return [self._make_with(factory, changed_at, identity, previous) for identity, previous in batch]

    def _refresh(self, identity: ProxyIdentity) -> bool:
        shape = self._shapes.get(identity)
        if shape is None:  # its last stream left meanwhile
            return False
        return self._install(identity, shape.snapshot, self._make(identity, previous=shape.snapshot))

    def _install(self, identity: ProxyIdentity, previous: Snapshot, fresh: Snapshot) -> bool:
        """Make `fresh` (built from `previous`) the shape's snapshot and wake its streams if it differs."""
        shape = self._shapes.get(identity)
        if shape is None or shape.snapshot is not previous:
            # its last stream left while it was built (or the shape was dropped and made anew from the
            # new factory already): nothing to install
            return False
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
        return self._make_with(self._factory, self._changed_at, identity, previous)

    def _make_with(self, factory: ResourceFactory, changed_at: float, identity: ProxyIdentity,
                   previous: Snapshot | None = None) -> Snapshot:
        """Build a shape's snapshot; never publish a broken one: on failure keep the previous (or, for a
        new shape, serve an empty one) and say why in the log. Pure apart from the interner and the
        factory's memo: safe in the worker thread."""
        try:
            made = factory(identity)
            if isinstance(made, Assembly):
                fresh = made.snapshot(self.interner, changed_at)
            else:
                fresh = Snapshot.build(made, self.interner, changed_at)
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
