"""How the server uses CPython's cyclic garbage collector: the one place that tunes, pauses or freezes it.

Three measures, each measured where it is explained:
- `configure_for_serving`: a larger young-generation threshold while building policy-wide state;
- `paused`: no collections during a policy load (its short-lived containers die by reference counting);
- `keep_collections_short`: survivors frozen every second, so a full collection does not walk them.

The last one in detail: full collections otherwise stall the event loop for up to a second.

A full (generation 2) collection walks every tracked object: with 500 proxy shapes connected that is a
few hundred MB of snapshots, policy models and memo entries, and it holds the GIL throughout (measured
with bench/loop_lag.py: pauses of 0.5-0.9 s during a burst of new shapes and a reload, the largest single
stall of the loop). Nearly all of that heap lives until the next policy change and is freed by reference
counting, not by the cycle collector (snapshots, resources and models hold no cycles).

So the objects that survived a while are moved out of the collector's sight (`gc.freeze()`) every
`FREEZE_EVERY` seconds: collections then walk only what is young. Frozen objects are still freed by
reference counting; only cyclic garbage among them waits for `full_collect`, which runs when the frozen
set has grown `REGROW` times since the last one, looked at every `FULL_EVERY` seconds (a pause, logged
with its length).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

# `serve`'s gen-0 collection threshold (CPython's default: 700 allocations)
GEN0_THRESHOLD = 50_000
FREEZE_EVERY = 1.0
FULL_EVERY = 600.0
REGROW = 2.0


def configure_for_serving() -> None:
    """Building the policy-wide part allocates millions of small, long-lived objects (models, protobuf
    messages); at CPython's default gen-0 threshold (700) the collector runs thousands of times over
    them and takes about a third of a cold build at 5,000 services (bench/vs_sovereign.py). A larger
    gen-0 threshold keeps cycles collected, just in bigger, far fewer batches.

    Also, from now on, what a policy load leaves is frozen as the load ends (see `paused`)."""
    global _freeze_after_pause
    gc.set_threshold(GEN0_THRESHOLD, *gc.get_threshold()[1:])
    _freeze_after_pause = True


_pause_lock = threading.Lock()
_pauses = 0
_was_enabled = False
# set when serving: the survivors of a pause are frozen as it ends
_freeze_after_pause = False


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No cyclic collections inside (process-wide; nested and concurrent pauses are counted, and the
    collector comes back on, if it was on, when the last one ends).

    For a policy load: it makes tens of thousands of short-lived containers per reload (one per file:
    stats, signatures, outcomes) and keeps few. With the collector on, they outlived its young
    generations during the load and counted towards a full collection, which every few reloads walked
    the whole heap (a second of a one-line edit with 15,000 objects); off, they are freed by reference
    counting before any collection sees them. The few cycles a load may leave wait for the next run.

    When serving (`configure_for_serving`), what is left when the last pause ends is frozen before the
    collector comes back: the first collection after a startup load otherwise walked every object the
    load made (a tenth of a startup at 5,000 services, bench/policy_load.py), all of them policy that
    lives until the next change, which `keep_collections_short` would freeze within a second anyway."""
    global _pauses, _was_enabled
    with _pause_lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                if _freeze_after_pause:
                    gc.freeze()
                gc.enable()


def full_collect() -> int:
    """Collect everything, frozen objects included, then freeze the survivors; what was collected."""
    started = time.perf_counter()
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    log.info("full garbage collection: %d objects collected, %d kept, %.0f ms", collected,
             gc.get_freeze_count(), (time.perf_counter() - started) * 1000)
    return collected


async def keep_collections_short() -> None:
    """Run until cancelled: freeze survivors every second, a full collection now and then."""
    gc.freeze()  # what was loaded at start lives on
    baseline = max(gc.get_freeze_count(), 1)
    last_check = time.monotonic()
    while True:
        await asyncio.sleep(FREEZE_EVERY)
        gc.freeze()
        # gc.get_freeze_count() walks the whole frozen list (~150 ms at 5,000 services, seen in a
        # profile when it ran every second): ask it once per FULL_EVERY only.
        if time.monotonic() - last_check < FULL_EVERY:
            continue
        last_check = time.monotonic()
        if gc.get_freeze_count() > baseline * REGROW:
            full_collect()
            baseline = max(gc.get_freeze_count(), 1)
