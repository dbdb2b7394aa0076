"""Serve one real Envoy 5,000 clusters: our server's CPU against sovereign's, and Envoy's own static floor.

Issue 12's row "serve a 5,000-cluster Envoy: server CPU ÷ sovereign's (same window)". Three ways to give
one real Envoy (`--disable-hot-restart`, `--concurrency 1`, free ports, stopped by PID) the same N = 5,000
services:

- `controlplane`: `python -m controlplane serve --insecure-xds` on a policy of N ServiceEntries (STATIC,
  two endpoints each), Envoy bootstrapped by `controlplane bootstrap` (delta ADS over gRPC): N EDS
  clusters + N ClusterLoadAssignments, the PassthroughCluster, one listener, one route table of N
  virtual hosts.
- `sovereign`: sovereign (PyPI 0.32, run from its own venv, `--sovereign-venv`, never a dependency of
  this project) with Python templates (bench/sovereign_resources.py) over a template context holding the
  same N services. Sovereign 0.32 speaks only Envoy's REST-JSON xDS (no gRPC), so Envoy polls CDS and
  LDS/RDS by HTTP every `--refresh-s`; clusters carry their endpoints inline (STATIC), as sovereign's
  templates do, so there is no EDS. One gunicorn worker (`SOVEREIGN_WORKERS=1`); its CPU is the master's
  plus the worker's.
- `static`: Envoy from a bootstrap file holding the same clusters and listener (route table inline): the
  floor, no server at all.

Window, per run: from Envoy's start to its admin /stats showing `cluster_manager.active_clusters` at
the expected count (N + PassthroughCluster + the xDS cluster) and `warming_clusters` 0. Over it: the
server's CPU (utime+stime from /proc/<pid>/stat of the server and its child processes), Envoy's wall
time to converge and Envoy's own CPU. After it, the server's CPU over `--idle-s` seconds with Envoy still
connected (sovereign re-renders on every REST poll). Each server is started fresh per run and left to go
idle after it is ready, so its startup is not in the window. `--reps` repetitions, medians. Results go to
bench/results/vs_sovereign.{md,json} with the machine and date.

    .venv/bin/python bench/vs_sovereign.py                      # N = 5,000, 3 repetitions
    .venv/bin/python bench/vs_sovereign.py --services 500 --reps 1 --no-write   # a quick smoke run
    .venv/bin/python bench/vs_sovereign.py --reps 0 --profile /tmp/cp.txt       # py-spy of our server
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import sovereign_resources as resources
from machine import describe_machine

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOPBACK = "127.0.0.1"
MODES = ("controlplane", "controlplane-warm", "sovereign", "static")


# ---------------------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _stat_fields(pid: int) -> list[str]:
    # the fields after the ")" of the command name (a name may hold spaces): state is [0], ppid [1]
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime of pid and its live descendants (gunicorn's worker is a child of its master)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError):
                continue  # exited meanwhile
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = _stat_fields(current)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
        todo.extend(children.get(current, []))
    return total / CLK_TCK


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM by PID, then SIGKILL if it lingers (gunicorn's master stops its own worker on SIGTERM)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def wait_for(check: Callable[[], bool], process: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(what)


def settle(pid: int, timeout: float = 60.0, quiet_s: float = 0.5, budget_s: float = 0.03) -> float:
    """Wait until the server is idle (background warm-up done), so the window holds only serving."""
    deadline = time.perf_counter() + timeout
    before = tree_cpu_seconds(pid)
    while time.perf_counter() < deadline:
        time.sleep(quiet_s)
        now = tree_cpu_seconds(pid)
        if now - before <= budget_s:
            return now
        before = now
    return before


# ---------------------------------------------------------------------------------------------------------
# the servers


@dataclass
class Served:
    """A running server (None for the static floor) and the bootstrap Envoy should start with."""

    process: subprocess.Popen[bytes] | None
    bootstrap: Path
    expected_clusters: int


def write_policy(directory: Path, services: list[resources.Json]) -> None:
    directory.mkdir(parents=True)
    for service in services:
        name = service["host"].split(".", 1)[0]
        endpoints = "\n".join(
            f"  - {{address: {address}, ports: {{http: {port}}}}}" for address, port in service["endpoints"]
        )
        (directory / f"{name}.yaml").write_text(f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{service["host"]}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {service["port"]}, name: http, protocol: HTTP}}]
  endpoints:
{endpoints}
""")


def start_controlplane(
    work: Path, services: list[resources.Json], envoy_admin: int, log: IO[bytes]
) -> tuple[Served, str]:
    """The server and Envoy's bootstrap; also the xDS address (the warm mode bootstraps a second Envoy)."""
    policy = work / "policy"
    if not policy.exists():
        write_policy(policy, services)
    xds, admin = free_port(), free_port()
    argv = [sys.executable, "-m", "controlplane", "--log-level", "WARNING", "serve", "--config", str(policy),
            "--xds-address", f"{LOOPBACK}:{xds}", "--admin-address", f"{LOOPBACK}:{admin}",
            "--ca-dir", str(work / "ca"), "--insecure-xds", "--no-watch"]  # fmt: skip
    process = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=log)
    wait_for(lambda: http_get(admin, "/readyz")[0] == 200, process, 120, "controlplane /readyz")
    address = f"{LOOPBACK}:{xds}"
    bootstrap = controlplane_bootstrap(work, address, f"bench-{os.getpid()}", envoy_admin)
    return Served(process, bootstrap, len(services) + 2), address  # + PassthroughCluster + xds_cluster


def controlplane_bootstrap(work: Path, xds_address: str, node_id: str, envoy_admin: int) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "controlplane", "bootstrap", "--node-id", node_id,
         "--xds-address", xds_address, "--admin-address", f"{LOOPBACK}:{envoy_admin}",
         "--outbound-address", f"{LOOPBACK}:{free_port()}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    bootstrap = work / f"{node_id}.bootstrap.yaml"
    bootstrap.write_text(done.stdout)
    return bootstrap


def warm_up(served: Served, xds_address: str, args: argparse.Namespace, work: Path) -> None:
    """controlplane-warm: a first Envoy (another node, its own outbound port: another proxy shape)
    converges and stops before the measured one, so the policy-wide part is already built: the
    server's cost per proxy once the shared translation exists (after a warm-up at startup, or for
    every proxy after the first)."""
    admin = free_port()
    first = Served(served.process, controlplane_bootstrap(work, xds_address, "warm-up", admin),
                   served.expected_clusters)  # fmt: skip
    run_envoy(first, args.envoy, admin, work, 0.0)


def write_sovereign_config(work: Path, services: list[resources.Json], refresh_s: float) -> Path:
    directory = work / "sovereign"
    directory.mkdir(exist_ok=True)
    (directory / "services.json").write_text(json.dumps(services))
    settings = {"address": LOOPBACK, "port": free_port(), "rest_cluster": "sovereign", "refresh_s": refresh_s}
    (directory / "listener.json").write_text(json.dumps(settings))
    lines = ["templates:", "  default:"]
    for kind in ("clusters", "listeners", "routes"):
        template = directory / f"{kind}_template.py"
        template.write_text(f"from sovereign_resources import {kind}_template as call  # noqa: F401\n")
        lines.append(f"    - {{type: {kind}, spec: {{protocol: python, path: {template}}}}}")
    lines += [
        "template_context:", "  context:",
        f"    services: {{protocol: file, serialization: json, path: {directory / 'services.json'}}}",
        f"    listener_settings: {{protocol: file, serialization: json,"
        f" path: {directory / 'listener.json'}}}",
        # logging off, as for our server (WARNING): neither pays for access logs in the window
        "logging:", "  access_logs: {enabled: false}", "  application_logs: {enabled: false}",
    ]  # fmt: skip
    config = directory / "sovereign.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config


def start_sovereign(work: Path, services: list[resources.Json], envoy_admin: int, venv: Path,
                    refresh_s: float, log: IO[bytes]) -> Served:  # fmt: skip
    config = write_sovereign_config(work, services, refresh_s)
    port = free_port()
    env = {**os.environ, "SOVEREIGN_CONFIG": f"file://{config}", "SOVEREIGN_HOST": LOOPBACK,
           "SOVEREIGN_PORT": str(port), "SOVEREIGN_WORKERS": "1", "PYTHONPATH": str(BENCH)}  # fmt: skip
    process = subprocess.Popen([str(venv / "bin" / "sovereign")], cwd=work, env=env, stdout=log, stderr=log)
    wait_for(lambda: http_get(port, "/healthcheck")[0] == 200, process, 120, "sovereign /healthcheck")
    # every template renders (and is imported) before the window, as our server builds before /readyz
    status, body = http_get(port, "/deepcheck", timeout=60)
    if status != 200 or b"Failed" in body:
        raise RuntimeError(f"sovereign /deepcheck: {status} {body[:500]!r}")
    source = resources.rest_source("sovereign", refresh_s)
    bootstrap = {
        "node": {"id": f"bench-{os.getpid()}", "cluster": "bench.default"},
        "admin": {"address": {"socket_address": {"address": LOOPBACK, "port_value": envoy_admin}}},
        "static_resources": {"clusters": [{
            "name": "sovereign", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "sovereign", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": LOOPBACK, "port_value": port}}}}]}]},
        }]},
        "dynamic_resources": {"cds_config": source, "lds_config": source},
    }  # fmt: skip
    path = work / "sovereign-bootstrap.json"
    path.write_text(json.dumps(bootstrap))
    return Served(process, path, len(services) + 2)  # + PassthroughCluster + the sovereign cluster


def untyped(resource: resources.Json) -> resources.Json:
    return {key: value for key, value in resource.items() if key != "@type"}


def write_static(work: Path, services: list[resources.Json], envoy_admin: int) -> Served:
    # a bootstrap holds typed messages, not Any: no "@type" at the top of a cluster, listener or table
    listener = untyped(resources.listener(LOOPBACK, free_port(), None))
    listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"] = untyped(
        resources.route_config(services)
    )
    bootstrap = {
        "node": {"id": f"bench-{os.getpid()}", "cluster": "bench.default"},
        "admin": {"address": {"socket_address": {"address": LOOPBACK, "port_value": envoy_admin}}},
        "static_resources": {"clusters": [untyped(c) for c in resources.clusters(services)],
                             "listeners": [listener]},
    }  # fmt: skip
    path = work / "static-bootstrap.json"
    path.write_text(json.dumps(bootstrap))
    return Served(None, path, len(services) + 1)  # + PassthroughCluster


# ---------------------------------------------------------------------------------------------------------
# one run


def cluster_gauges(port: int) -> dict[str, int]:
    _, body = http_get(port, "/stats?filter=^cluster_manager%5C.(active|warming)_clusters$", timeout=5)
    out: dict[str, int] = {}
    for line in body.decode().splitlines():
        name, _, value = line.partition(": ")
        out[name.rpartition(".")[2]] = int(value)
    return out


def cluster_names(port: int) -> set[str]:
    """What Envoy runs: the names of its active clusters (dynamic and static, the xDS cluster left out)."""
    _, body = http_get(port, "/config_dump?resource=dynamic_active_clusters&mask=cluster.name", timeout=30)
    names = {item["cluster"]["name"] for item in json.loads(body).get("configs", [])}
    _, body = http_get(port, "/config_dump?resource=static_clusters&mask=cluster.name", timeout=30)
    names |= {item["cluster"]["name"] for item in json.loads(body).get("configs", [])}
    return names - {"xds_cluster", "sovereign"}


def endpoint_count(port: int) -> int:
    """Hosts in the outbound clusters (2 per service): the endpoints arrived, by EDS or inline."""
    _, body = http_get(port, "/stats?filter=%5Ecluster%5C.outbound.*%5C.membership_total$", timeout=30)
    return sum(int(line.rpartition(": ")[2]) for line in body.decode().splitlines() if ": " in line)


def run_envoy(served: Served, envoy: str, admin: int, work: Path, idle_s: float,
              on_start: Callable[[], None] | None = None) -> dict[str, Any]:  # fmt: skip
    server_pid = served.process.pid if served.process is not None else None
    log = (work / "envoy.log").open("ab")
    cpu_before = tree_cpu_seconds(server_pid) if server_pid else 0.0
    if on_start is not None:
        on_start()
    started = time.perf_counter()
    process = subprocess.Popen(
        [envoy, "-c", str(served.bootstrap), "--disable-hot-restart", "--concurrency", "1",
         "--log-level", "warn"], stdout=log, stderr=log)  # fmt: skip
    try:
        gauges: dict[str, int] = {}

        def converged() -> bool:
            nonlocal gauges
            try:
                gauges = cluster_gauges(admin)
            except OSError:  # the admin listener is not up yet
                return False
            return gauges.get("active_clusters", 0) >= served.expected_clusters and (
                gauges.get("warming_clusters", -1) == 0
            )

        deadline = started + 300
        while not converged():
            if process.poll() is not None:
                raise RuntimeError(f"envoy exited with {process.returncode} (see {work / 'envoy.log'})")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"envoy did not converge: {gauges}")
            time.sleep(0.02)
        converge_s = time.perf_counter() - started
        server_cpu = (tree_cpu_seconds(server_pid) - cpu_before) if server_pid else 0.0
        envoy_cpu = tree_cpu_seconds(process.pid)
        after = tree_cpu_seconds(server_pid) if server_pid else 0.0
        time.sleep(idle_s)
        idle_cpu = (tree_cpu_seconds(server_pid) - after) if server_pid else 0.0
        names = cluster_names(admin)
        return {"converge_s": converge_s, "server_cpu_s": server_cpu, "envoy_cpu_s": envoy_cpu,
                "server_cpu_per_s_after": idle_cpu / idle_s if idle_s else 0.0,
                "active_clusters": gauges["active_clusters"], "endpoints": endpoint_count(admin),
                "cluster_names": sorted(names)}  # fmt: skip
    finally:
        stop(process)
        log.close()


def one_run(mode: str, args: argparse.Namespace, work: Path, services: list[resources.Json],
            profile: Path | None = None) -> dict[str, Any]:  # fmt: skip
    admin = free_port()
    log = (work / f"{mode}.log").open("ab")
    served: Served | None = None
    spy: list[subprocess.Popen[bytes]] = []
    try:
        if mode in ("controlplane", "controlplane-warm"):
            served, xds_address = start_controlplane(work, services, admin, log)
            if mode == "controlplane-warm":
                warm_up(served, xds_address, args, work)
        elif mode == "sovereign":
            served = start_sovereign(work, services, admin, args.sovereign_venv, args.refresh_s, log)
        else:
            served = write_static(work, services, admin)
        if served.process is not None:
            settle(served.process.pid)
        on_start = None
        if profile is not None and served.process is not None:
            pid = served.process.pid

            def on_start() -> None:
                spy.append(subprocess.Popen(
                    [args.py_spy, "record", "-p", str(pid), "-r", "100", "-f", "raw", "-o", str(profile),
                     "--nonblocking"], stdout=log, stderr=log))  # fmt: skip
                time.sleep(1.0)  # py-spy attaches before Envoy starts

        result = run_envoy(served, args.envoy, admin, work, args.idle_s, on_start)
        result["mode"] = mode
        return result
    finally:
        for recorder in spy:  # SIGINT: py-spy writes what it sampled and exits
            recorder.send_signal(signal.SIGINT)
            recorder.wait(60)
        if served is not None and served.process is not None:
            stop(served.process)
        log.close()


# ---------------------------------------------------------------------------------------------------------
# report


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        mine = [run for run in runs if run["mode"] == mode]
        if not mine:
            continue
        summary[mode] = {
            key: statistics.median(run[key] for run in mine)
            for key in ("converge_s", "server_cpu_s", "envoy_cpu_s", "server_cpu_per_s_after", "endpoints")
        }
        summary[mode]["runs"] = len(mine)
        summary[mode]["server_cpu_s_all"] = [round(run["server_cpu_s"], 3) for run in mine]
        summary[mode]["converge_s_all"] = [round(run["converge_s"], 3) for run in mine]
    return summary


def render(report: dict[str, Any]) -> str:
    summary = report["summary"]
    sovereign_cpu = summary.get("sovereign", {}).get("server_cpu_s")
    static_s = summary.get("static", {}).get("converge_s")
    xds = {"controlplane": "delta ADS (gRPC), EDS clusters + CLAs, LDS, RDS",
           "controlplane-warm": "same, a first Envoy (another shape) served before",
           "sovereign": f"REST-JSON polling every {report['refresh_s']} s: CDS (STATIC, endpoints inline), "
                        "LDS, RDS",
           "static": "bootstrap file, no server"}  # fmt: skip
    lines = [
        "# One Envoy, N clusters: our server against sovereign (bench/vs_sovereign.py)",
        "",
        f"Date {report['date']}; N = {report['services']:,} services; {report['reps']} repetitions "
        "(medians); "
        f"Envoy {report['envoy_version']}; sovereign {report['sovereign_version']}; "
        f"server at {report['commit']}.",
        f"Machine: {report['machine']['cpu_model']}, {report['machine']['cores']} cores, "
        f"load average at start {report['machine']['load_average_at_start']}.",
        "",
        "Window: Envoy start → `active_clusters` = N + PassthroughCluster (+ the xDS cluster) and "
        "`warming_clusters` 0. Server CPU = utime+stime of the server and its children over the window.",
        "",
        "| server | xDS | server CPU in window s (median; runs) | ÷ sovereign | Envoy converge s (runs) "
        "| ÷ static | Envoy CPU s | server CPU/s after | Envoy endpoints |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, row in summary.items():
        ratio = f"{row['server_cpu_s'] / sovereign_cpu:.2f}x" if sovereign_cpu and mode != "static" else "-"
        floor = f"{row['converge_s'] / static_s:.2f}x" if static_s else "-"
        cpu = f"{row['server_cpu_s']:.2f} ({', '.join(f'{v:.2f}' for v in row['server_cpu_s_all'])})"
        if mode == "static":
            cpu = "-"
        lines.append(
            f"| {mode} | {xds[mode]} | {cpu} | {ratio} | {row['converge_s']:.2f} "
            f"({', '.join(f'{v:.2f}' for v in row['converge_s_all'])}) | {floor} | {row['envoy_cpu_s']:.2f} "
            f"| {row['server_cpu_per_s_after']:.3f} | {row['endpoints']:,.0f} |"
        )
    lines += ["", f"Same cluster names in Envoy for every server: {report['same_cluster_names']}.", ""]
    lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def profile_table(raw: Path, top: int = 30) -> list[str]:
    """py-spy's raw (collapsed) stacks as inclusive % of samples per function (file:line dropped)."""
    total, inclusive = 0, Counter[str]()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        # "function (path:line)" -> "function path": a function counts once per stack (inclusive)
        frames = {f.split(" (")[0] + " " + f.partition("(")[2].split(":")[0] for f in stack.split(";")}
        for frame in frames:
            inclusive[frame] += int(count)
    lines = ["| inclusive % | function (file) |", "|---|---|"]
    lines += [f"| {100 * n / total:.1f} | `{frame.strip()}` |" for frame, n in inclusive.most_common(top)]
    return [f"{total} samples at 100 Hz.", "", *lines]


def write_profile(raw: Path, run: dict[str, Any], services: int) -> None:
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    text = [
        "# py-spy of `controlplane serve` while one Envoy converges on its clusters (bench/vs_sovereign.py)",
        "",
        f"Date {date}; N = {services:,}; server CPU in the window {run['server_cpu_s']:.2f} s "
        "(under py-spy); "
        f"Envoy converged in {run['converge_s']:.2f} s.",
        "",
        *profile_table(raw),
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vs_sovereign_profile.md").write_text("\n".join(text) + "\n")


def envoy_version(envoy: str) -> str:
    done = subprocess.run([envoy, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return done.stdout.strip().rpartition(" ")[2].split("/")[1] if "/" in done.stdout else done.stdout.strip()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES)
    )
    parser.add_argument(
        "--refresh-s", type=float, default=1.0, help="Envoy's REST poll interval for sovereign"
    )
    parser.add_argument(
        "--idle-s", type=float, default=3.0, help="server CPU measured this long after converging"
    )
    parser.add_argument("--sovereign-venv", type=Path, default=ROOT.parent / "sov-venv")
    # the venv's bin first (as controlplane.mesh.runner.find_envoy), then PATH
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    parser.add_argument("--envoy", default=shutil.which("envoy", path=path))
    parser.add_argument("--py-spy", default=shutil.which("py-spy", path=path))
    parser.add_argument(
        "--profile", type=Path, help="one more controlplane run under py-spy, raw output here"
    )
    parser.add_argument("--keep", type=Path, help="keep the work directory (policy, configs, logs) here")
    parser.add_argument("--no-write", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.envoy:
        raise SystemExit("no envoy on PATH")
    modes = [mode for mode in args.modes.split(",") if mode]
    services = resources.services(args.services)
    work = Path(tempfile.mkdtemp(prefix="vs-sovereign-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    machine = describe_machine(["grpcio", "protobuf"])
    runs: list[dict[str, Any]] = []
    try:
        for rep in range(args.reps):
            for mode in modes:
                run = one_run(mode, args, work, services)
                run["rep"] = rep
                runs.append(run)
                print(f"rep {rep} {mode}: server CPU {run['server_cpu_s']:.2f} s, Envoy converged in "
                      f"{run['converge_s']:.2f} s, {run['active_clusters']} active clusters",
                      flush=True)  # fmt: skip
        if args.profile is not None:
            run = one_run("controlplane", args, work, services, profile=args.profile)
            print(
                f"profiled run: server CPU {run['server_cpu_s']:.2f} s (py-spy in {args.profile})", flush=True
            )
            if not args.no_write:
                write_profile(args.profile, run, args.services)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    if not runs:
        return 0
    name_sets = {tuple(run["cluster_names"]) for run in runs}
    for run in runs:
        run.pop("cluster_names")
    describe = ["git", "-C", str(ROOT), "describe", "--always", "--dirty"]
    commit = subprocess.run(describe, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    sovereign = subprocess.run([str(args.sovereign_venv / "bin" / "python"), "-c",
                                "import importlib.metadata as m; print(m.version('sovereign'))"],
                               capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "commit": commit,
        "machine": machine, "services": args.services, "reps": args.reps, "refresh_s": args.refresh_s,
        "envoy_version": envoy_version(args.envoy), "sovereign_version": sovereign.stdout.strip() or "?",
        "same_cluster_names": len(name_sets) == 1, "runs": runs, "summary": summarize(runs),
        "notes": [
            "Each server starts fresh per run and is left to go idle after it is ready; its startup "
            "(policy load, first build) is outside the window.",
            "Sovereign 0.32 has no gRPC xDS: Envoy polls it over REST, and each poll re-renders the "
            "templates (no discovery cache configured), which the 'CPU/s after' column shows.",
            "Endpoints: our server sends EDS clusters and ClusterLoadAssignments; sovereign and the "
            "static floor carry the same two endpoints per cluster inline (STATIC clusters).",
        ],
    }  # fmt: skip
    text = render(report)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "vs_sovereign.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / "vs_sovereign.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
