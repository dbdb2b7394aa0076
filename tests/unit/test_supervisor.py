"""The local mesh's supervisor (controlplane/mesh/supervisor.py) with real short-lived processes and a
fake clock: exits are seen, restarts wait a doubling back-off, a process that stayed up starts over at 1 s,
and nothing restarts once the mesh is stopping."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from controlplane.mesh.processes import Process
from controlplane.mesh.supervisor import Supervisor, delay_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_exit(process: Process) -> None:
    process.popen.wait(10)


def test_backoff_doubles_up_to_30s() -> None:
    assert [delay_after(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_exit_restart_and_backoff(tmp_path: Path) -> None:
    process = Process("app", [sys.executable, "-c", "print('hello'); raise SystemExit(3)"], tmp_path)
    clock, lines, restarted = Clock(), [], []
    supervisor = Supervisor([process], lines.append, on_restart=restarted.append, clock=clock)
    wait_exit(process)
    first = process.pid
    supervisor.poll()
    assert lines[-1].endswith(f"app (pid {first}) exited with code 3; restarting in 1s"), lines
    clock.now += 0.5
    supervisor.poll()
    assert process.pid == first  # not yet
    clock.now += 0.6
    supervisor.poll()
    assert process.pid != first and restarted == [process]
    assert lines[-1].endswith(f"app restarted (pid {first} -> {process.pid}, restart 1)")
    wait_exit(process)
    supervisor.poll()  # a quick second failure: twice the wait
    assert lines[-1].endswith("exited with code 3; restarting in 2s"), lines
    clock.now += 2.1
    supervisor.poll()
    wait_exit(process)
    clock.now += 61  # it "stayed up" for over a minute: back to 1 s
    supervisor.poll()
    assert lines[-1].endswith("restarting in 1s"), lines
    assert supervisor.restarts("app") == 2
    log = process.log_path.read_text()
    assert log.count("hello") == 3 and "--- [" in log and "mesh: app restarted" in log


def test_nothing_restarts_once_stopped(tmp_path: Path) -> None:
    process = Process("app", [sys.executable, "-c", "pass"], tmp_path)
    clock, lines = Clock(), []
    supervisor = Supervisor([process], lines.append, clock=clock)
    wait_exit(process)
    supervisor.stop()
    clock.now += 100
    supervisor.poll()
    supervisor.poll()
    assert lines == [] and process.popen.poll() == 0


def test_running_process_is_left_alone(tmp_path: Path) -> None:
    process = Process("app", [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path)
    try:
        supervisor = Supervisor([process], print)
        for _ in range(3):
            supervisor.poll()
            time.sleep(0.01)
        assert supervisor.restarts("app") == 0 and process.running()
    finally:
        process.kill()
        process.popen.wait()
