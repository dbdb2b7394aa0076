"""Watches the policy directory and turns bursts of file events into one reload.

Debounce: a reload runs once no event has arrived for QUIET seconds, or MAX_DELAY seconds after the first
event of a burst, whichever comes first. An editor's save (write a temp file, rename it over the original)
or a `git checkout` produces its events within a few milliseconds, so a 50 ms quiet period folds them into
one push while keeping edit → ACK latency low (the issue's target is 150 ms at p50). Istio waits 100 ms /
10 s because Kubernetes event storms last longer than file bursts; Contour's 100 ms / 500 ms cap is what we
keep for the maximum, so a script rewriting files continuously still gets pushed twice a second.

Every kind of change (new, modified, deleted, renamed, in subdirectories) triggers a reload of the whole
directory, which costs what changed: the policy store reads and parses again only the files whose stat
changed, and validates again only when an object did (policystore.py); only resources that actually
changed are pushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import watchfiles
from prometheus_client import Histogram

from controlplane.api.credentials import CREDENTIALS_DIR
from controlplane.api.loader import YAML_SUFFIXES

log = logging.getLogger(__name__)

QUIET = 0.05
MAX_DELAY = 0.5

DEBOUNCE_SECONDS = Histogram(
    "controlplane_debounce_seconds",
    "From the first file event of a burst to the reload it triggers (Istio: pilot_debounce_time)",
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1),
)


class PolicyFileFilter(watchfiles.DefaultFilter):
    """Policy files only: a log file or an editor's swap file in the directory must not cause reloads
    (a log written into the watched directory would otherwise reload forever). Deletions always count:
    a deleted directory may have held policy files. Gateway credentials (`credentials/<name>/*`, any
    name) count too: replacing a certificate's files is how it is rotated."""

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        if not super().__call__(change, path):
            return False
        name = Path(path).name
        if change == watchfiles.Change.deleted or os.path.isdir(path):
            return True
        if name.startswith("."):
            return False
        return name.endswith(YAML_SUFFIXES) or CREDENTIALS_DIR in Path(path).parts[-3:-1]


class PolicyWatcher:
    """`await run()` until `stop()`; calls `reload(first_event_at)` (time.monotonic()) once per burst."""

    def __init__(self, root: Path, reload: Callable[[float], object],
                 quiet: float = QUIET, max_delay: float = MAX_DELAY) -> None:
        self.root = root
        self._reload = reload
        self.quiet, self.max_delay = quiet, max_delay
        self._stop = asyncio.Event()
        self._events: asyncio.Queue[float] = asyncio.Queue()
        # a change was seen and its reload has not finished (status --wait must not pass before it)
        self.pending = False

    def stop(self) -> None:
        self._stop.set()

    async def _produce(self) -> None:
        # step: watchfiles' own grouping window; kept short, the burst logic below decides
        async for changes in watchfiles.awatch(self.root, step=10, debounce=200, stop_event=self._stop,
                                               recursive=True,
                                               watch_filter=PolicyFileFilter()):
            log.debug("policy files changed: %s", sorted(path for _, path in changes))
            self.pending = True
            self._events.put_nowait(time.monotonic())

    async def run(self) -> None:
        producer = asyncio.create_task(self._produce(), name="policy-watch")
        stopping = asyncio.create_task(self._stop.wait())
        try:
            while not self._stop.is_set():
                first = asyncio.create_task(self._events.get())
                done, _ = await asyncio.wait({first, stopping, producer}, return_when=asyncio.FIRST_COMPLETED)
                if first not in done:
                    first.cancel()
                    if producer in done and not self._stop.is_set() and producer.exception():
                        log.error("watching %s failed; live reload is off (SIGHUP still reloads)",
                                  self.root, exc_info=producer.exception())
                    return
                await self._burst(first.result())
        finally:
            self._stop.set()
            stopping.cancel()
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    async def _burst(self, started: float) -> None:
        deadline = started + self.max_delay
        while True:
            wait = min(self.quiet, deadline - time.monotonic())
            if wait <= 0:
                break
            try:
                await asyncio.wait_for(self._events.get(), timeout=wait)
            except TimeoutError:
                break
        DEBOUNCE_SECONDS.observe(time.monotonic() - started)
        try:
            result = self._reload(started)
            if inspect.isawaitable(result):
                await result
        except Exception:  # a reload bug must not stop live reload for good
            log.exception("reloading %s failed", self.root)
        finally:
            self.pending = not self._events.empty()
