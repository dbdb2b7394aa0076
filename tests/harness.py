"""Shared test harness: free loopback ports, subprocesses stopped by PID, polling with deadlines.

The fixtures and the failure-report hook are in tests/conftest.py. Rules every test that starts something
follows (and the harness enforces):

- Sockets bind to 127.0.0.1 only, on ports the OS picked (`free_port()` binds port 0, reads it, closes).
- Every process is started through a `ProcessGroup` (fixtures `processes` per test, `module_processes`
  per module). The group's finalizer stops each process by its PID — SIGTERM, then SIGKILL after a
  timeout — whether the test passed or failed. Nothing is ever killed by name.
- Each process writes stdout and stderr to files under pytest's tmp_path; when a test fails, the tail of
  every process that was alive during it is added to the failure report.
- Waiting is polling with a deadline (`wait_until`), never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
TAIL_LINES = 40

# Ports handed out in this session: the OS may return a just-closed port again, and two servers of one
# test must not be given the same port.
_handed_out: set[int] = set()


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on `host` that was free a moment ago (bind port 0, read it, close)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("the OS keeps returning ports this session already uses")


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class Timeout(AssertionError):
    """A `wait_until` deadline passed."""


class GiveUp(AssertionError):
    """Raised by a `wait_until` probe when waiting longer cannot help (e.g. the process exited)."""


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
    describe: Callable[[], str] | None = None,
) -> T:
    """Call `probe` until it returns something truthy (returned) or `timeout` seconds pass (Timeout).

    Exceptions from `probe` count as "not yet" (a server that is still starting refuses connections);
    the last one, and `describe()` if given, go into the Timeout message. `GiveUp` ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
        except GiveUp:
            raise
        except Exception as exc:  # the probe's failure is the "not yet" signal
            last_error = exc
            result = None
        if result:
            return result
        if time.monotonic() >= deadline:
            details = f"; last error: {last_error!r}" if last_error else ""
            if describe is not None:
                with contextlib.suppress(Exception):
                    details += f"; state: {describe()}"
            raise Timeout(f"timed out after {timeout:.1f}s waiting for {what}{details}")
        time.sleep(interval)


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """A subprocess with its output in files, stopped by PID."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, *,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        log_dir.mkdir(parents=True, exist_ok=True)
        # a name may be reused (a restarted server): number the log files
        index = 0
        while (log_dir / f"{name}.{index}.stdout").exists():
            index += 1
        self.stdout_path = log_dir / f"{name}.{index}.stdout"
        self.stderr_path = log_dir / f"{name}.{index}.stderr"
        self.started_at = time.monotonic()
        self.stopped_at: float | None = None
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            # own session: a Ctrl-C in the terminal goes to pytest, which then stops us by PID
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                          env=dict(env) if env is not None else None, cwd=cwd,
                                          start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def running(self) -> bool:
        return self.popen.poll() is None

    def send_signal(self, sig: int) -> None:
        if self.running():
            self.popen.send_signal(sig)  # os.kill(self.pid, sig), and only while it is ours

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout)
        self._mark_stopped()
        return code

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds. Returns the exit code."""
        if self.running():
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        self._mark_stopped()
        code = self.popen.returncode
        assert code is not None
        return code

    def _mark_stopped(self) -> None:
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def report(self, lines: int = TAIL_LINES) -> str:
        state = "running" if self.running() else f"exited with {self.popen.returncode}"
        return (f"$ {' '.join(self.argv)}\n[pid {self.pid}, {state}]\n"
                f"--- stdout ({self.stdout_path}) ---\n{tail(self.stdout_path, lines)}\n"
                f"--- stderr ({self.stderr_path}) ---\n{tail(self.stderr_path, lines)}")

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid}>"


# Every process started in this session, for failure reports (filtered by lifetime).
_all_processes: list[ManagedProcess] = []


def all_processes() -> list[ManagedProcess]:
    return list(_all_processes)


class ProcessGroup:
    """Starts processes and stops all of them, by PID, in reverse start order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[ManagedProcess] = []

    def start(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.log_dir, env=env, cwd=cwd)
        self.processes.append(process)
        _all_processes.append(process)
        return process

    def stop_all(self, timeout: float = 5.0) -> None:
        errors: list[BaseException] = []
        for process in reversed(self.processes):
            try:
                process.stop(timeout)
            except BaseException as exc:  # stop the others anyway
                errors.append(exc)
        if errors:
            raise errors[0]


def env_with_venv_path() -> dict[str, str]:
    """os.environ with this interpreter's bin directory first on PATH (where the venv keeps envoy)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(os.path.abspath(sys.executable)), env.get("PATH", "")])
    return env


def find_envoy() -> str | None:
    """The Envoy binary `make run` uses ($ENVOY_BIN, else the venv's, else PATH); None if there is none."""
    from controlplane.mesh.processes import MeshError
    from controlplane.mesh.runner import find_envoy as mesh_find_envoy

    try:
        return mesh_find_envoy()
    except MeshError:
        return None
