"""Processes of the local mesh: started with their output in one log file each, watched, and stopped by
PID (SIGTERM, then SIGKILL after a timeout) — never by name, so nothing else on the machine is touched.

Each child runs in its own session: a Ctrl-C in the terminal reaches only the runner, which then stops the
children in order (Envoys before the control plane, so they do not log a burst of reconnect errors). On
Linux each child also asks the kernel for SIGTERM when the runner dies, so even a SIGKILLed runner leaves
no Envoy behind.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

TAIL_LINES = 20


class MeshError(RuntimeError):
    """Something of the mesh failed to start or died; the message says which one and why."""


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Process:
    """A child process writing stdout and stderr to `log_dir/<name>.log`."""

    def __init__(
        self, name: str, argv: Sequence[str], log_dir: Path, *, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self.popen = self._spawn("wb")

    def _spawn(self, mode: str) -> subprocess.Popen[bytes]:
        with open(self.log_path, mode) as log:
            return subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=self.env,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def restart(self) -> None:
        """Start the same command again (after it exited), appending to the same log."""
        if self.running():
            raise RuntimeError(f"{self.name} is still running")
        self.popen.wait()
        self.popen = self._spawn("ab")

    def note(self, line: str) -> None:
        """Append a line of the mesh's own to this process's log (its exits and restarts)."""
        try:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(line + "\n")
        except OSError:
            pass

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def terminate(self) -> None:
        if self.running():
            self.popen.terminate()

    def kill(self) -> None:
        if self.running():
            self.popen.kill()

    def failure(self, what: str = "exited") -> str:
        code = self.popen.poll()
        status = f"{what} with code {code}" if code is not None else what
        return f"{self.name} (pid {self.pid}) {status}; last lines of {self.log_path}:\n" + "\n".join(
            f"    {line}" for line in tail(self.log_path).splitlines()
        )

    def __repr__(self) -> str:
        return f"<Process {self.name} pid={self.pid}>"


def stop_all(processes: Sequence[Process], timeout: float = 5.0) -> None:
    """SIGTERM to all (in the given order), wait up to `timeout`, SIGKILL what is left, reap everything."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
    for process in processes:
        process.popen.wait()


def wait_ready(processes: Mapping[Process, Callable[[], bool]], timeout: float) -> None:
    """Poll each process's readiness probe until all are ready. MeshError naming the first process that
    exits, or every one still not ready at the deadline."""
    pending = dict(processes)
    deadline = time.monotonic() + timeout
    while pending:
        for process, probe in list(pending.items()):
            if not process.running():
                raise MeshError(process.failure())
            try:
                ready = probe()
            except OSError:  # not listening yet
                ready = False
            if ready:
                del pending[process]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise MeshError("\n".join(p.failure(f"not ready after {timeout:g}s") for p in pending))
        time.sleep(0.1)


def http_get(
    address: str, path: str, timeout: float = 1.0, headers: Mapping[str, str] | None = None
) -> tuple[int, bytes]:
    """GET http://address/path on a fresh connection: (status, body)."""
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on (or holds) host:port. SO_REUSEADDR like the servers themselves, so a
    port in TIME_WAIT from the previous run counts as free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
