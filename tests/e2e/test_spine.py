"""The spine, end to end: policy YAML → control plane (subprocess) → real Envoy → real HTTP traffic.

Tests that take `fresh_mesh` share one control plane and one Envoy per xDS mode (delta and SotW) for the
whole module; each starts from the baseline policy. The startup and shutdown tests start their own.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Mesh, names, service_clusters
from tests.e2e.mesh import (
    DUMPED_TYPES,
    PYTHON,
    ControlPlane,
    Envoy,
    Routes,
    Service,
    Upstream,
    write_policy,
)
from tests.harness import ProcessGroup, wait_until

pytestmark = pytest.mark.e2e

BAD_CLUSTER = "bad"


# 1 ---------------------------------------------------------------------------------------------------


def test_request_through_sidecar_reaches_upstream(fresh_mesh: Mesh) -> None:
    mesh = fresh_mesh
    a = mesh.svc_a
    reply = mesh.assert_routed(a.host, "/a/hello", "a")
    assert reply.json()["path"] == "/a/hello"
    # Host as <host>:<port> too, and the DNS service (STRICT_DNS cluster) by its own virtual host
    mesh.assert_routed(f"{a.host}:{a.port}", "/a/hello", "a")
    mesh.assert_routed(mesh.svc_b.host, "/", "b")
    # a path no route of the VirtualService matches is not served by any upstream (Istio: 404)
    assert mesh.envoy.request(a.host, "/nowhere").status == 404
    # an unknown host neither
    mesh.assert_not_served("unknown.test", "/a/x")




def test_dns_service_named_localhost(fresh_mesh: Mesh) -> None:
    """A DNS ServiceEntry whose endpoint is a host name Envoy resolves itself."""
    mesh = fresh_mesh
    local = mesh.service("svc-local", "b", 8081, resolution="DNS", address="localhost")
    mesh.write_policy({**mesh.baseline_policy(), "local.yaml": [local]})
    mesh.control_plane.reload()
    mesh.wait_converged()
    # Envoy's default lookup family prefers IPv6 ([::1]); the clusters ask for V4_PREFERRED
    mesh.wait_routed(local.host, "/", "b", timeout=10)


# 2 ---------------------------------------------------------------------------------------------------


def test_envoy_runs_the_versions_the_server_reports(fresh_mesh: Mesh) -> None:
    mesh = fresh_mesh
    served = mesh.control_plane.config_dump(mesh.node_id)
    stream = mesh.control_plane.stream_of(mesh.node_id)
    assert stream is not None
    view = mesh.envoy.view()
    assert stream["snapshot_version"] == served["snapshot_version"]
    assert stream["protocol"] == mesh.mode
    a, b = mesh.svc_a, mesh.svc_b
    assert service_clusters(view.resources["clusters"]) == {a.cluster, b.cluster}
    assert len(view.resources["listeners"]) == 1 and len(view.resources["routes"]) == 1
    mesh.assert_synced()
    for type_name in DUMPED_TYPES:
        want = {r["name"]: r["version"] for r in served[type_name]}
        running = view.resources[type_name]
        status = stream["types"][type_name]
        assert set(running) == set(want), type_name
        assert status["acked_version"] == status["sent_version"] != ""
        if mesh.delta:
            # delta: Envoy keeps each resource's own version, which is the server's per-resource version
            assert running == want, type_name
            # ... and syncz's type-level sent/ACKed version is the snapshot the last response was cut from
            assert status["acked_version"] == served["snapshot_version"]
        else:
            # SotW: the version_info of the type's last response; every resource it changed carries it
            if type_name in view.type_versions:
                assert view.type_versions[type_name] == status["acked_version"], type_name
            if len(want) == 1:
                assert set(running.values()) == {status["acked_version"]}, type_name
            assert status["acked_version"] not in want.values()  # a type version, not a resource's
    # EDS for the STATIC service (the DNS one has its endpoints inline)
    assert service_clusters(names(served["endpoints"])) == {a.cluster}


# 3 ---------------------------------------------------------------------------------------------------


def test_policy_changes_reach_envoy(fresh_mesh: Mesh) -> None:
    mesh = fresh_mesh
    a, b = mesh.svc_a, mesh.svc_b
    before = mesh.control_plane.config_dump(mesh.node_id)["snapshot_version"]

    # a new route prefix, and svc-a's endpoint moves to a second upstream; reload by SIGHUP
    a2 = mesh.service("svc-a", "a2", 80)
    mesh.write_policy({"services.yaml": [a2, b], "routes.yaml": [Routes(a2, [("/v2", a2), ("/b", b)])]})
    mesh.control_plane.signal(signal.SIGHUP)
    wait_until(lambda: mesh.control_plane.config_dump(mesh.node_id)["snapshot_version"] != before,
               what="the server to reload on SIGHUP")
    mesh.wait_converged()
    mesh.assert_synced()
    mesh.wait_routed(a.host, "/v2/x", "a2")
    assert mesh.envoy.request(a.host, "/a/x").status == 404  # the VirtualService has no route for it
    mesh.assert_routed(a.host, "/b/x", "b")
    assert mesh.envoy.warming() == {"cluster_manager.warming_clusters": 0,
                                    "listener_manager.total_listeners_warming": 0}

    # a new service (new cluster) and one removed; reload by POST /debug/reload
    c = mesh.service("svc-c", "c", 81)
    mesh.write_policy({"services.yaml": [a2, c], "routes.yaml": [Routes(a2, [("/v2", a2), ("/c", c)])]})
    result = mesh.control_plane.reload()
    assert result["diagnostics"] == []
    mesh.wait_converged()
    mesh.assert_synced()
    mesh.wait_routed(c.host, "/", "c")
    mesh.assert_routed(a.host, "/c/x", "c")
    mesh.assert_routed(a.host, "/v2/x", "a2")
    mesh.assert_not_served(b.host, "/")
    assert mesh.envoy.request(a.host, "/b/x").status == 404
    assert service_clusters(mesh.envoy.dynamic()["clusters"]) == {a2.cluster, c.cluster}
    assert mesh.envoy.warming() == {"cluster_manager.warming_clusters": 0,
                                    "listener_manager.total_listeners_warming": 0}
    stats = mesh.envoy.stats()
    assert stats["cluster_manager.cds.update_rejected"] == 0
    assert stats["listener_manager.lds.update_rejected"] == 0


# 4 ---------------------------------------------------------------------------------------------------


def test_nack_keeps_old_config_and_is_not_resent(fresh_mesh: Mesh) -> None:
    mesh = fresh_mesh
    cp, envoy = mesh.control_plane, mesh.envoy
    rejected_before = envoy.stats()["cluster_manager.cds.update_rejected"]
    running_before = envoy.dynamic()

    mesh.write_extra({"clusters": [{"name": BAD_CLUSTER, "connect_timeout": "-1s", "type": "STATIC"}]})
    cp.reload()
    assert BAD_CLUSTER in names(cp.config_dump(mesh.node_id)["clusters"])

    def nacked() -> dict[str, object] | None:
        stream = cp.stream_of(mesh.node_id)
        status = stream["types"].get("clusters") if stream else None
        return status if status and status["state"] == "NACKED" else None

    status = wait_until(nacked, what="the clusters NACK in /debug/syncz", describe=mesh.describe)
    error = str(status["nack_error"])
    assert error, status
    # Envoy's own text: proto validation of connect_timeout ("Expected positive duration")
    assert any(word in error.lower() for word in (BAD_CLUSTER, "validation", "duration")), error
    assert status["nacked_version"] == status["sent_version"]
    assert status["acked_version"] != status["sent_version"]

    # Envoy keeps running the last good config and keeps serving the old routes
    mesh.check_baseline_traffic()
    assert envoy.dynamic() == running_before
    assert BAD_CLUSTER not in envoy.dynamic()["clusters"]

    # the rejected config is not sent again: nothing new on the stream, no new rejection in Envoy
    responses = int(str(status["responses"]))
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        stream = cp.stream_of(mesh.node_id)
        assert stream is not None
        assert stream["types"]["clusters"]["responses"] == responses
        assert stream["types"]["clusters"]["state"] == "NACKED"
        assert envoy.stats()["cluster_manager.cds.update_rejected"] == rejected_before + 1
        time.sleep(0.2)
    # a reload with unchanged input does not re-send it either
    cp.reload()
    time.sleep(0.3)
    stream = cp.stream_of(mesh.node_id)
    assert stream is not None and stream["types"]["clusters"]["responses"] == responses
    assert envoy.stats()["cluster_manager.cds.update_rejected"] == rejected_before + 1

    # remove the bad resource: back to SYNCED on every type
    mesh.write_extra({})
    cp.reload()
    mesh.wait_converged()
    mesh.check_baseline_traffic()
    assert BAD_CLUSTER not in names(cp.config_dump(mesh.node_id)["clusters"])
    mesh.assert_synced()
    assert envoy.stats()["cluster_manager.cds.update_rejected"] == rejected_before + 1


# 5 ---------------------------------------------------------------------------------------------------

def test_server_restart_keeps_traffic_and_versions(fresh_mesh: Mesh) -> None:
    mesh = fresh_mesh
    cp, envoy = mesh.control_plane, mesh.envoy
    served_before = cp.resource_versions(mesh.node_id)
    snapshot_before = cp.config_dump(mesh.node_id)["snapshot_version"]
    running_before = envoy.dynamic()

    assert cp.stop() == 0
    wait_until(lambda: envoy.stats()["control_plane.connected_state"] == 0,
               what="envoy to notice the control plane is gone")
    # traffic keeps flowing while the server is down
    for _ in range(3):
        mesh.check_baseline_traffic()

    cp.start()
    wait_until(lambda: cp.stream_of(mesh.node_id) is not None, timeout=20,
               what="envoy to reconnect to the restarted server")
    wait_until(lambda: envoy.stats()["control_plane.connected_state"] == 1, what="envoy connected")
    if mesh.delta:
        # Envoy told the server what it has (initial_resource_versions); it is up to date: each type gets
        # one empty response (so Envoy resets its retry backoff), nothing is re-sent. Give a wrong server
        # time to show itself before checking.
        time.sleep(1.0)
        stream = cp.stream_of(mesh.node_id)
        assert stream is not None
        assert all(s["responses"] <= 1 for s in stream["types"].values()), stream["types"]
        assert envoy.dynamic() == running_before
        # ... and syncz still knows the proxy is up to date (it said so in initial_resource_versions)
        mesh.assert_synced()
    else:
        def all_acked() -> bool:
            stream = cp.stream_of(mesh.node_id)
            return stream is not None and set(stream["types"]) >= {"clusters", "listeners", "routes"} and all(
                s["acked_version"] == s["sent_version"] != "" for s in stream["types"].values())

        wait_until(all_acked, what="every type ACKed after the reconnect", describe=mesh.describe)
        mesh.assert_synced()
    mesh.wait_converged()
    assert cp.config_dump(mesh.node_id)["snapshot_version"] == snapshot_before
    assert cp.resource_versions(mesh.node_id) == served_before
    assert envoy.dynamic() == running_before
    mesh.check_baseline_traffic()


# 6 ---------------------------------------------------------------------------------------------------

_BAD_SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: broken
spec:
  hosts:
  - broken.test
  resolution: STATIC
  ports:
  - number: 80
    name: http
  subjectAltNames:
  - spiffe://cluster.local/ns/default/sa/broken
  endpoints:
  - address: 127.0.0.1
"""


def _bad_input_dir(config_dir: Path, upstream: Upstream) -> tuple[Service, str]:
    good = Service("good", 80, upstream.port)
    write_policy(config_dir, {"good.yaml": [good, Routes(good, [("/", good)])]})
    (config_dir / "zz-bad.yaml").write_text(_BAD_SERVICE)
    line = _BAD_SERVICE.splitlines().index("  subjectAltNames:") + 1
    expected = (f"{config_dir / 'zz-bad.yaml'}:{line}: ServiceEntry/broken: spec.subjectAltNames: "
                "unsupported field")
    return good, expected


def test_bad_input_at_startup(envoy_binary: str, processes: ProcessGroup, tmp_path: Path,
                              upstreams: dict[str, Upstream]) -> None:
    config_dir = tmp_path / "config"
    good, expected = _bad_input_dir(config_dir, upstreams["a"])

    validated = subprocess.run([PYTHON, "-m", "controlplane", "validate", str(config_dir)],
                               capture_output=True, text=True, timeout=30, check=False)
    assert validated.returncode == 1, validated
    assert validated.stdout.splitlines() == [expected], validated.stdout
    assert re.fullmatch(r"\S+:\d+: \w+/[\w.-]+: \S+: .+", expected)

    cp = ControlPlane(processes, config_dir)
    cp.start()
    report = cp.policy()
    # the server adds what it did with the invalid object (policystore.py: applied per object)
    assert expected in report["diagnostics"]
    notes = [d for d in report["diagnostics"] if d != expected]
    assert len(notes) == 1 and notes[0].endswith("is invalid and never valid; not applied"), notes
    assert report["objects"] == ["ServiceEntry/default/good", "VirtualService/default/good"]

    envoy = Envoy(envoy_binary, processes, tmp_path, "sidecar-bad-input", cp.xds_address)
    envoy.start()
    wait_until(lambda: envoy.request(good.host, "/x").upstream == "a", what="the valid service to be routed")
    assert service_clusters(envoy.dynamic()["clusters"]) == {good.cluster}
    broken = envoy.request("broken.test", "/")
    assert broken.upstream is None and broken.status >= 400, broken


# 7 ---------------------------------------------------------------------------------------------------


def test_sigterm_is_graceful_and_envoy_keeps_serving(envoy_binary: str, processes: ProcessGroup,
                                                     tmp_path: Path, upstreams: dict[str, Upstream]) -> None:
    config_dir = tmp_path / "config"
    svc = Service("svc-t", 80, upstreams["c"].port)
    write_policy(config_dir, {"svc.yaml": [svc]})
    cp = ControlPlane(processes, config_dir)
    server = cp.start()
    envoy = Envoy(envoy_binary, processes, tmp_path, "sidecar-sigterm", cp.xds_address, delta=False)
    envoy.start()
    wait_until(lambda: envoy.request(svc.host, "/").upstream == "c", what="traffic through envoy")
    wait_until(lambda: cp.stream_of(envoy.node_id) is not None, what="the stream in syncz")

    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    code = server.wait(timeout=10)
    took = time.monotonic() - started
    assert code == 0, server.output()
    assert took < 5, f"shutdown took {took:.1f}s"

    assert envoy.running()
    for _ in range(5):
        reply = envoy.request(svc.host, "/after")
        assert reply.status == 200 and reply.upstream == "c"
    assert envoy.running()
    # a graceful shutdown logs no errors
    errors = [line for line in server.output().splitlines() if " ERROR " in line or "Traceback" in line]
    assert errors == [], server.output()


def test_max_connection_age_makes_envoy_reconnect_without_losing_traffic(
    envoy_binary: str, processes: ProcessGroup, tmp_path: Path, upstreams: dict[str, Upstream]
) -> None:
    """`--max-connection-age`: the server closes Envoy's xDS connection after the age; Envoy reconnects (a
    new stream), is synced again, and serves traffic throughout."""
    config_dir = tmp_path / "config"
    svc = Service("svc-age", 80, upstreams["c"].port)
    write_policy(config_dir, {"svc.yaml": [svc]})
    cp = ControlPlane(processes, config_dir, serve_args=("--max-connection-age", "1"))
    cp.start()
    envoy = Envoy(envoy_binary, processes, tmp_path, "sidecar-age", cp.xds_address)
    envoy.start()
    wait_until(lambda: envoy.request(svc.host, "/").upstream == "c", what="traffic through envoy")
    first = cp.stream_of(envoy.node_id)
    assert first is not None

    def reconnected() -> bool:
        stream = cp.stream_of(envoy.node_id)
        return stream is not None and stream["stream"] != first["stream"] and bool(stream["synced"])

    wait_until(reconnected, timeout=20, what="envoy to reconnect on a new, synced stream")
    reply = envoy.request(svc.host, "/after")
    assert reply.status == 200 and reply.upstream == "c"

