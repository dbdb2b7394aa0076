"""Keeps CPython's full garbage collections from stalling the event loop for up to a second.

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
import gc
import logging
import time

log = logging.getLogger(__name__)

FREEZE_EVERY = 1.0
FULL_EVERY = 600.0
REGROW = 2.0


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
