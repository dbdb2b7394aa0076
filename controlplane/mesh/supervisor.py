"""Keeps the local mesh's processes running: one that exits (an Envoy that crashed, an app someone
killed) is started again with the same command line, after a back-off that doubles with each quick
failure (1 s, 2 s, 4 s ... at most 30 s; back to 1 s once it has stayed up for a minute). Every exit and
restart is logged to the runner's output and appended to the process's own log, so the gap shows there
and in `controlplane status` (the proxy is missing while it is down).

The rest of the mesh keeps serving meanwhile: other Envoys keep their config, and the control plane
serves the restarted Envoy the same config again when it reconnects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from controlplane.mesh.processes import Process

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
STABLE_AFTER = 60.0  # seconds up after which a process's next exit counts as a first failure again


@dataclass
class _Watch:
    started: float
    failures: int = 0  # quick exits in a row
    due: float | None = None  # when the pending restart is to happen (time.monotonic())
    restarts: int = 0


def delay_after(failures: int) -> float:
    """The back-off before restart number `failures` in a row (1-based)."""
    return min(MAX_DELAY, FIRST_DELAY * 2 ** max(0, failures - 1))


@dataclass
class Supervisor:
    """`poll()` now and then (the runner's main loop does, every 0.2 s): restarts what has exited."""

    processes: Sequence[Process]
    log: Callable[[str], None]
    on_restart: Callable[[Process], None] = lambda _: None
    clock: Callable[[], float] = time.monotonic
    _watches: dict[str, _Watch] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: bool = False

    def stop(self) -> None:
        """No more restarts (the mesh is being stopped); waits for a poll in progress to finish."""
        with self._lock:
            self.stopped = True

    def restarts(self, name: str) -> int:
        watch = self._watches.get(name)
        return watch.restarts if watch is not None else 0

    def poll(self) -> None:
        with self._lock:
            if self.stopped:
                return
            now = self.clock()
            for process in self.processes:
                watch = self._watches.setdefault(process.name, _Watch(started=now))
                if process.running():
                    continue
                if watch.due is None:
                    self._exited(process, watch, now)
                elif now >= watch.due:
                    self._restart(process, watch, now)

    def _exited(self, process: Process, watch: _Watch, now: float) -> None:
        watch.failures = 1 if now - watch.started >= STABLE_AFTER else watch.failures + 1
        delay = delay_after(watch.failures)
        watch.due = now + delay
        self._note(process, f"{process.name} (pid {process.pid}) exited with code {process.popen.poll()}; "
                            f"restarting in {delay:g}s")

    def _restart(self, process: Process, watch: _Watch, now: float) -> None:
        old = process.pid
        try:
            process.restart()
        except OSError as exc:  # the binary went away, the log directory is gone ...
            watch.failures += 1
            watch.due = now + delay_after(watch.failures)
            self._note(process, f"{process.name}: cannot restart: {exc}")
            return
        watch.started, watch.due = now, None
        watch.restarts += 1
        self._note(process, f"{process.name} restarted (pid {old} -> {process.pid}, "
                            f"restart {watch.restarts})")
        self.on_restart(process)

    def _note(self, process: Process, message: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        self.log(f"[{stamp}] {message}")
        process.note(f"--- [{stamp}] mesh: {message} ---")
