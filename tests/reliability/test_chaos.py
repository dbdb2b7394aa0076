"""Chaos with a real Envoy under steady load: the control plane killed (SIGTERM, SIGKILL) and restarted, an
unbuildable value present at restart, a policy edit made during the outage.

Asserted: 0 failed requests throughout; after a restart the server serves identical versions and Envoy
runs them; the edit made during the outage arrives after the reconnect. The re-sync time (control plane
ready → Envoy synced) is measured per restart; set RELIABILITY_RESULTS=FILE to append the figures as JSON
lines (bench/results/reliability.md records a run). On main, an unbuildable value at restart emptied the
proxy's snapshot (about half of 2,000 requests failed), and a delta proxy took up to 23 s to re-sync
(Envoy's reconnect backoff grew to seconds; the bootstrap now caps it at 1 s).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import UPSTREAMS, Mesh, start_mesh
from tests.e2e.mesh import Routes, Upstream, http_request
from tests.harness import ProcessGroup, find_envoy, wait_until

pytestmark = pytest.mark.e2e

UNBUILDABLE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: unbuildable}
spec:
  hosts: [svc-b.test]
  http:
  - route: [{destination: {host: svc-b.test, port: {number: 8080}}}]
    timeout: 9223372036854775807s
    retries: {attempts: 99999999999}
"""


class Load:
    """Steady traffic through the sidecar from a thread: every request must be answered 200 by the
    upstream its route names."""

    def __init__(self, mesh: Mesh, interval: float = 0.02) -> None:
        self.mesh, self.interval = mesh, interval
        self.sent = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        a, b = self.mesh.svc_a, self.mesh.svc_b
        checks = ((a.host, "/a/x", "a"), (a.host, "/b/x", "b"), (b.host, "/y", "b"))
        while not self._stop.is_set():
            host, path, upstream = checks[self.sent % len(checks)]
            self.sent += 1
            try:
                reply = self.mesh.envoy.request(host, path, timeout=5.0)
                if reply.status != 200 or reply.upstream != upstream:
                    self.failures.append(f"{host}{path}: {reply.status} from {reply.upstream}")
            except OSError as err:
                self.failures.append(f"{host}{path}: {err!r}")
            self._stop.wait(self.interval)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture(scope="module", params=["delta", "sotw"])
def chaos_mesh(request: pytest.FixtureRequest, module_processes: ProcessGroup,
               tmp_path_factory: pytest.TempPathFactory) -> Generator[Mesh, None, None]:
    binary = find_envoy()
    assert binary is not None, "no envoy binary"
    upstreams = {name: Upstream(name) for name in UPSTREAMS}
    try:
        yield start_mesh(request.param, binary, module_processes,
                         tmp_path_factory.mktemp(f"chaos-{request.param}"), upstreams)
    finally:
        for upstream in upstreams.values():
            upstream.close()


@pytest.fixture
def mesh(chaos_mesh: Mesh) -> Iterator[Mesh]:
    chaos_mesh.ensure_server()
    chaos_mesh.write_policy(chaos_mesh.baseline_policy())
    (chaos_mesh.config_dir / "unbuildable.yaml").unlink(missing_ok=True)
    chaos_mesh.control_plane.reload()
    chaos_mesh.wait_converged()
    yield chaos_mesh


def record(mesh: Mesh, event: str, **figures: Any) -> None:
    line = {"mode": mesh.mode, "event": event, **figures}
    print(json.dumps(line))
    target = os.environ.get("RELIABILITY_RESULTS")
    if target:
        with Path(target).open("a") as out:
            out.write(json.dumps(line) + "\n")


def synced(mesh: Mesh) -> bool:
    stream = mesh.control_plane.stream_of(mesh.node_id)
    if stream is None or set(stream["types"]) < {"clusters", "endpoints", "listeners", "routes"}:
        return False
    return all(s["state"] == "SYNCED" for s in stream["types"].values()) and mesh.converged()


def restart(mesh: Mesh, sig: int) -> float:
    """Kill the control plane with `sig`, start it again; returns the re-sync time (ready → synced)."""
    cp = mesh.control_plane
    process = cp.process
    assert process is not None
    process.send_signal(sig)
    process.wait(timeout=10)
    wait_until(lambda: mesh.envoy.stats()["control_plane.connected_state"] == 0,
               what="envoy to notice the control plane is gone")
    time.sleep(0.5)  # an outage, with traffic flowing
    cp.start(timeout=30)
    ready = time.monotonic()
    wait_until(lambda: synced(mesh), timeout=60, what="envoy to re-sync", describe=mesh.describe)
    return time.monotonic() - ready


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_restart_under_load_fails_no_request_and_serves_identical_versions(mesh: Mesh, sig: int) -> None:
    served = mesh.control_plane.resource_versions(mesh.node_id)
    running = mesh.envoy.dynamic()
    times = []
    with Load(mesh) as load:
        # SIGKILL twice: the second restart finds Envoy's backoff as the first left it
        for _ in range(2 if sig == signal.SIGKILL else 1):
            times.append(restart(mesh, sig))
    assert load.failures == [], load.failures[:10]
    assert load.sent > 20
    assert mesh.control_plane.resource_versions(mesh.node_id) == served
    assert mesh.envoy.dynamic() == running
    record(mesh, signal.Signals(sig).name, requests=load.sent, failed=len(load.failures),
           resync_seconds=[round(t, 2) for t in times])
    # the target is 1 s (measured 0.1-0.5 s); the margin is for a loaded 2-core machine
    assert max(times) < 3, times


def test_unbuildable_value_at_restart_fails_no_request(mesh: Mesh) -> None:
    served = mesh.control_plane.resource_versions(mesh.node_id)
    with Load(mesh) as load:
        mesh.control_plane.stop()
        (mesh.config_dir / "unbuildable.yaml").write_text(UNBUILDABLE)
        mesh.control_plane.start(timeout=30)
        ready = time.monotonic()
        wait_until(lambda: synced(mesh), timeout=60, what="envoy to re-sync", describe=mesh.describe)
        took = time.monotonic() - ready
    assert load.failures == [], load.failures[:10]
    # the unbuildable object is a diagnostic and left out: everything else is served as before
    assert mesh.control_plane.resource_versions(mesh.node_id) == served
    problems = mesh.control_plane.policy()["diagnostics"]
    assert any("unbuildable.yaml" in p and "too long" in p for p in problems), problems
    assert any("unbuildable.yaml" in p and "less than or equal" in p for p in problems), problems
    record(mesh, "unbuildable value at restart", requests=load.sent, failed=len(load.failures),
           resync_seconds=round(took, 2))


def test_edit_during_the_outage_arrives_after_the_reconnect(mesh: Mesh) -> None:
    a, b = mesh.svc_a, mesh.svc_b
    with Load(mesh) as load:
        process = mesh.control_plane.process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        mesh.write_policy({"services.yaml": [a, b],
                           "routes.yaml": [Routes(a, [("/a", a), ("/b", b), ("/c", b)])]})
        mesh.control_plane.start(timeout=30)
        ready = time.monotonic()
        mesh.wait_routed(a.host, "/c/x", "b", timeout=60)
        took = time.monotonic() - ready
    assert load.failures == [], load.failures[:10]
    record(mesh, "edit during outage", requests=load.sent, failed=len(load.failures),
           arrived_seconds=round(took, 2))
    assert http_request(mesh.control_plane.admin_port, "/readyz").status == 200
