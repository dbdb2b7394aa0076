"""Live reload end to end: three real Envoy sidecars (delta, SotW, delta) on one `controlplane serve` that
watches its policy directory — no SIGHUP, no POST /debug/reload; every change is a file edit.

The control plane and the Envoys start once for the module; each test starts from the baseline policy
(restored by editing the files, too). Edits are atomic saves (temp file + rename), as editors make them.

- an edit reaches every proxy (real HTTP through each sidecar) and `controlplane status --wait` returns 0;
- an invalid edit changes nothing served (versions, traffic, no pushes) and is diagnosed with file:line;
- a change Envoy rejects is NACKED with Envoy's words and the policy object's file and line;
- a no-op edit (comments, reordered documents) pushes nothing, and config dumps follow the moved lines;
- new files, deleted files and files in subdirectories are picked up;
- CSDS on the xDS port lists the three nodes as SYNCED.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from tests.e2e.conftest import Mesh
from tests.e2e.live_support import (
    RE2_REJECTS,
    atomic_write,
    first_accepted,
    line_of,
    metric,
    metrics,
    pushes_by_type,
)
from tests.e2e.mesh import PYTHON, ControlPlane, Envoy, Service, Upstream
from tests.harness import LOOPBACK, ProcessGroup, wait_until

pytestmark = pytest.mark.e2e

# node id, delta?
PROXIES = (("live-delta-1", True), ("live-sotw-2", False), ("live-delta-3", True))
# how long "nothing happens" is watched for: well past the watcher's quiet period (50 ms) plus a rebuild
QUIET_WINDOW = 0.6


@dataclass
class Live:
    """One watching control plane, three Envoys, the policy directory they run on."""

    control_plane: ControlPlane
    meshes: list[Mesh]
    upstreams: dict[str, Upstream]
    config_dir: Path

    @property
    def admin(self) -> str:
        return f"{LOOPBACK}:{self.control_plane.admin_port}"

    def service(self, name: str, upstream: str, port: int = 80) -> Service:
        return Service(name, port, self.upstreams[upstream].port)

    @property
    def svc_a(self) -> Service:
        return self.service("svc-a", "a")

    @property
    def svc_b(self) -> Service:
        return self.service("svc-b", "b", 8080)

    @property
    def services_path(self) -> Path:
        return self.config_dir / "services.yaml"

    @property
    def routes_path(self) -> Path:
        return self.config_dir / "routes.yaml"

    def services_yaml(self, *, reorder: bool = False, comment: bool = False) -> str:
        docs = [self.svc_a.yaml(), self.svc_b.yaml()]
        if reorder:
            docs.reverse()
        return ("# edited by hand: nothing but this comment\n" if comment else "") + "---\n".join(docs)

    def routes_yaml(self, x_to: Service, *, extra_route: str = "", comment: bool = False) -> str:
        """svc-a's VirtualService: /x → `x_to`, /y → svc-b; `extra_route` is inserted first."""
        a, b = self.svc_a, self.svc_b
        head = "# routes of svc-a\n# (a comment that shifts every line)\n" if comment else ""
        return (
            head
            + f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc-a
spec:
  hosts:
  - {a.host}
  http:
{extra_route}\
  - name: x
    match:
    - uri:
        prefix: /x
    route:
    - destination:
        host: {x_to.host}
        port:
          number: {x_to.port}
  - name: y
    match:
    - uri:
        prefix: /y
    route:
    - destination:
        host: {b.host}
        port:
          number: {b.port}
"""
        )

    def write_baseline(self) -> None:
        for path in self.config_dir.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.name not in ("services.yaml", "routes.yaml"):
                path.unlink()
        atomic_write(self.services_path, self.services_yaml())
        atomic_write(self.routes_path, self.routes_yaml(self.svc_a))

    # observing ---------------------------------------------------------------------------------------

    def policy(self) -> dict[str, Any]:
        return self.control_plane.policy()

    def wait_all_routed(self, host: str, path: str, upstream: str | None, timeout: float = 10.0) -> None:
        for mesh in self.meshes:
            mesh.wait_routed(host, path, upstream, timeout=timeout)

    def wait_all_converged(self, timeout: float = 15.0) -> None:
        for mesh in self.meshes:
            mesh.wait_converged(timeout)
            mesh.assert_synced()

    def served_versions(self) -> dict[str, Any]:
        """Per node: syncz's sent/ACKed versions per type, and what Envoy's /config_dump shows."""
        out: dict[str, Any] = {}
        for mesh in self.meshes:
            stream = self.control_plane.stream_of(mesh.node_id)
            assert stream is not None
            out[mesh.node_id] = {
                "snapshot": stream["snapshot_version"],
                "syncz": {
                    t: (s["sent_version"], s["acked_version"], s["responses"])
                    for t, s in stream["types"].items()
                },
                "envoy": mesh.envoy.view().__dict__,
            }
        return out

    def reloads(self, result: str) -> float:
        return metric(metrics(self.control_plane.admin_port), "controlplane_reloads_total", result=result)

    def wait_reloaded(self, result: str, before: float, timeout: float = 10.0) -> None:
        """The watcher has run a reload with `result` since `before` was read, and none is pending."""
        wait_until(
            lambda: self.reloads(result) > before and not self.policy()["reload_pending"],
            timeout=timeout,
            what=f"a reload with result {result}",
            describe=lambda: json.dumps(self.policy()),
        )

    def hold_still(self, check: Callable[[], None], window: float = QUIET_WINDOW) -> None:
        """`check` keeps passing for `window` seconds (a negative assertion needs some time)."""
        end = time.monotonic() + window
        while True:
            check()
            if time.monotonic() >= end:
                return
            time.sleep(0.05)

    def status(self, processes: ProcessGroup, *args: str) -> tuple[int, str]:
        """`python -m controlplane status ARGS` against this control plane: (exit code, output)."""
        process = processes.start(
            "status", [PYTHON, "-m", "controlplane", "status", "--admin-address", self.admin, *args]
        )
        code = process.wait(60)
        return code, process.output()


@pytest.fixture(scope="module")
def live(
    envoy_binary: str,
    module_processes: ProcessGroup,
    upstreams: dict[str, Upstream],
    tmp_path_factory: pytest.TempPathFactory,
) -> Live:
    work = tmp_path_factory.mktemp("live")
    config_dir = work / "config"
    config_dir.mkdir()
    extra = work / "extra-resources.json"
    extra.write_text("{}")
    control_plane = ControlPlane(module_processes, config_dir, extra_resources=extra)
    live = Live(control_plane, [], upstreams, config_dir)
    live.write_baseline()
    control_plane.start()
    for node_id, delta in PROXIES:
        envoy = Envoy(envoy_binary, module_processes, work, node_id, control_plane.xds_address, delta=delta)
        envoy.start()
        live.meshes.append(
            Mesh("delta" if delta else "sotw", control_plane, envoy, upstreams, config_dir, extra)
        )
    live.wait_all_converged()
    return live


@pytest.fixture
def fresh(live: Live) -> Live:
    """Back on the baseline policy (written as file edits), converged, serving the baseline routes."""
    live.meshes[0].extra_resources.write_text("{}")
    live.write_baseline()
    wait_until(
        lambda: not live.policy()["diagnostics"] and not live.policy()["reload_pending"],
        timeout=10,
        what="the baseline policy to load",
        describe=lambda: json.dumps(live.policy()),
    )
    a = live.svc_a
    live.wait_all_routed(a.host, "/x", "a")
    live.wait_all_routed(a.host, "/y", "b")
    live.wait_all_converged()
    return live


# (a) ---------------------------------------------------------------------------------------------------


def test_edit_reaches_every_proxy_and_status_wait_returns(fresh: Live, processes: ProcessGroup) -> None:
    live = fresh
    a, b = live.svc_a, live.svc_b
    pushes = pushes_by_type(live.control_plane.admin_port)
    atomic_write(live.routes_path, live.routes_yaml(b))
    # right after the save, as a deploy script would: it must not pass before the edit is served
    waiter = processes.start(
        "status-wait",
        [PYTHON, "-m", "controlplane", "status", "--wait", "--admin-address", live.admin, "--timeout", "20"],
    )
    live.wait_all_routed(a.host, "/x", "b")
    assert waiter.wait(30) == 0, waiter.output()
    out = waiter.output()
    for mesh in live.meshes:
        row = next(line for line in out.splitlines() if line.startswith(mesh.node_id))
        assert row.count("SYNCED") == 4, out
        assert "STALE" not in row and "NACKED" not in row, out
    live.wait_all_converged()
    for mesh in live.meshes:
        mesh.assert_routed(a.host, "/x/1", "b")
        mesh.assert_routed(a.host, "/y/1", "b")
    # one route configuration changed: each proxy was sent routes once, nothing else (delta: only that
    # resource; SotW: only that type)
    after = pushes_by_type(live.control_plane.admin_port)
    grown = {t: after.get(t, 0) - pushes.get(t, 0) for t in after if after.get(t, 0) != pushes.get(t, 0)}
    assert grown == {"routes": len(live.meshes)}, grown


# (b) ---------------------------------------------------------------------------------------------------


def test_invalid_edit_changes_nothing_until_fixed(fresh: Live) -> None:
    live = fresh
    a, b = live.svc_a, live.svc_b
    port = live.control_plane.admin_port
    versions = live.served_versions()
    pushes = pushes_by_type(port)
    invalid = live.reloads("invalid")
    # the edit would move /x to svc-b, but an unsupported field makes the whole file invalid
    bad = live.routes_yaml(b).replace("  - name: x\n", "  - name: x\n    bogusField: 1\n")
    atomic_write(live.routes_path, bad)
    live.wait_reloaded("invalid", invalid)

    diagnostics = live.policy()["diagnostics"]
    where = f"{live.routes_path}:{line_of(bad, 'bogusField')}:"
    assert any(d.startswith(where) and "bogusField" in d and "unsupported field" in d for d in diagnostics), (
        diagnostics
    )

    def unchanged() -> None:
        assert pushes_by_type(port) == pushes
        for mesh in live.meshes:
            mesh.assert_routed(a.host, "/x/1", "a")

    live.hold_still(unchanged)
    assert live.served_versions() == versions
    for mesh in live.meshes:
        mesh.assert_synced()

    # fixing the file applies the edit it carried
    atomic_write(live.routes_path, live.routes_yaml(b))
    live.wait_all_routed(a.host, "/x", "b")
    assert live.policy()["diagnostics"] == []
    live.wait_all_converged()


# (c) ---------------------------------------------------------------------------------------------------


def _nacked(live: Live, type_name: str) -> dict[str, dict[str, Any]]:
    """{node: syncz status of `type_name`} of the proxies whose `type_name` is NACKED."""
    out = {}
    for mesh in live.meshes:
        stream = live.control_plane.stream_of(mesh.node_id)
        status = (stream or {}).get("types", {}).get(type_name, {})
        if status.get("state") == "NACKED":
            out[mesh.node_id] = status
    return out


def _re2_rejected_route(regex: str, dest: Service) -> str:
    return f"""\
  - name: re2-rejects
    match:
    - uri:
        regex: {json.dumps(regex)}
    route:
    - destination:
        host: {dest.host}
        port:
          number: {dest.port}
"""


def test_envoy_rejection_is_nacked_with_origin(fresh: Live, processes: ProcessGroup) -> None:
    live = fresh
    a, b = live.svc_a, live.svc_b
    # Lookahead (the obvious RE2-only regex) is refused by our validation already: a diagnostic, no NACK.
    # An atomic group, a possessive quantifier or \Z still pass it (see the report on check_regex).
    regex = first_accepted(RE2_REJECTS)
    origin: str | None = None
    if regex is not None:
        type_name = "routes"
        text = live.routes_yaml(a, extra_route=_re2_rejected_route(regex, b))
        atomic_write(live.routes_path, text)
        # an origin is the object: its document starts at the apiVersion line
        origin = f"VirtualService/default/svc-a ({live.routes_path}:{line_of(text, 'apiVersion:')})"
    else:  # validation knows every RE2 refusal listed: a raw resource Envoy rejects, via the test hook
        type_name = "clusters"
        bad = {"clusters": [{"name": "bad", "connect_timeout": "-1s", "type": "STATIC"}]}
        live.meshes[0].extra_resources.write_text(json.dumps(bad))
        atomic_write(live.routes_path, live.routes_yaml(a, comment=True))  # the edit makes the reload

    def all_nacked() -> dict[str, dict[str, Any]] | None:
        found = _nacked(live, type_name)
        return found if len(found) == len(live.meshes) else None

    nacked = wait_until(
        all_nacked,
        timeout=15,
        what=f"every proxy to NACK the {type_name}",
        describe=lambda: json.dumps(live.control_plane.syncz()),
    )
    assert live.policy()["diagnostics"] == []
    for node_id, status in nacked.items():
        error = status["nack_error"]
        # Envoy's own words, exactly as the proxy logs them
        mesh = next(m for m in live.meshes if m.node_id == node_id)
        assert mesh.envoy.process is not None
        assert error and f"rejected: {error}" in mesh.envoy.process.output(), (node_id, error)
        if origin is not None:
            # the route configuration's origins: the VirtualService (and the ServiceEntries of its hosts)
            assert origin in status["nack_origins"], (node_id, status["nack_origins"])
    # traffic still runs on the last accepted config
    for mesh in live.meshes:
        mesh.assert_routed(a.host, "/x/1", "a")

    code, out = live.status(processes)
    assert code == 0, out
    for mesh in live.meshes:
        row = next(line for line in out.splitlines() if line.startswith(mesh.node_id))
        assert "NACKED" in row, out
        assert f"{mesh.node_id} rejected {type_name}" in out, out
    assert origin is None or origin in out, out
    assert nacked[live.meshes[0].node_id]["nack_error"] in out, out
    code, out = live.status(processes, "--wait", "--timeout", "0.5")
    assert code == 1, out

    # the fix is sent and ACKed: NACKED clears
    live.meshes[0].extra_resources.write_text("{}")
    atomic_write(live.routes_path, live.routes_yaml(b))
    live.wait_all_routed(a.host, "/x", "b")
    live.wait_all_converged()
    assert _nacked(live, type_name) == {}


# (d) ---------------------------------------------------------------------------------------------------


def test_noop_edit_pushes_nothing(fresh: Live) -> None:
    live = fresh
    port = live.control_plane.admin_port
    versions = live.served_versions()
    pushes = pushes_by_type(port)
    ok = live.reloads("ok")
    atomic_write(live.services_path, live.services_yaml(reorder=True, comment=True))
    live.wait_reloaded("ok", ok)
    ok = live.reloads("ok")
    atomic_write(live.routes_path, live.routes_yaml(live.svc_a, comment=True))
    live.wait_reloaded("ok", ok)

    live.hold_still(lambda: assert_equal(pushes_by_type(port), pushes))
    assert live.served_versions() == versions
    for mesh in live.meshes:
        mesh.assert_synced()
        mesh.assert_routed(live.svc_a.host, "/x/1", "a")




def test_noop_edit_updates_provenance(fresh: Live) -> None:
    """Nothing is pushed for a comment, but file:line in config dumps follow the object."""
    live = fresh
    node = live.meshes[0].node_id
    ok = live.reloads("ok")
    text = live.routes_yaml(live.svc_a, comment=True)
    atomic_write(live.routes_path, text)
    live.wait_reloaded("ok", ok)
    origins = [o for r in live.control_plane.config_dump(node)["routes"] for o in r["origins"]]
    want = f"VirtualService/default/svc-a ({live.routes_path}:{line_of(text, 'apiVersion:')})"
    # the snapshot's bytes are unchanged (nothing pushed) but its provenance follows the file
    assert want in origins, origins


def assert_equal(got: object, want: object) -> None:
    assert got == want, f"{got} != {want}"


# (e) ---------------------------------------------------------------------------------------------------


def test_new_deleted_and_nested_files(fresh: Live) -> None:
    live = fresh
    c = live.service("svc-c", "c")
    d = live.service("svc-d", "a2")
    new_file = live.config_dir / "new.yaml"
    nested = live.config_dir / "team" / "nested" / "more.yml"

    atomic_write(new_file, c.yaml())
    live.wait_all_routed(c.host, "/new", "c")
    # a new directory with a file in it (written before the watcher could watch the directory)
    atomic_write(nested, d.yaml())
    live.wait_all_routed(d.host, "/nested", "a2")
    live.wait_all_converged()

    new_file.unlink()
    live.wait_all_routed(c.host, "/new", None)
    shutil.rmtree(live.config_dir / "team")
    live.wait_all_routed(d.host, "/nested", None)
    live.wait_all_converged()
    for mesh in live.meshes:
        mesh.assert_routed(live.svc_a.host, "/x/1", "a")


# (f) ---------------------------------------------------------------------------------------------------


def test_csds_lists_the_three_proxies_synced(fresh: Live) -> None:
    live = fresh
    with grpc.insecure_channel(live.control_plane.xds_address) as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        response = stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=10)
    configs = {config.node.id: config for config in response.config}
    assert set(configs) == {node_id for node_id, _ in PROXIES}
    for node_id, config in configs.items():
        types = {g.type_url.rpartition(".")[2] for g in config.generic_xds_configs}
        assert types >= {"Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration"}, node_id
        states = {(g.config_status, g.client_status) for g in config.generic_xds_configs}
        assert states == {(csds_pb2.SYNCED, dump_pb2.ACKED)}, (node_id, states)
        assert all(g.version_info for g in config.generic_xds_configs), node_id
        # the node Envoy sent, metadata included
        assert config.node.metadata.fields["outbound_address"].string_value
