"""Scale benchmark: N services, K distinct sidecars, against a real `controlplane serve` process.

Policy: N = 1,000 services, one file each: a ServiceEntry with 2 STATIC endpoints, a VirtualService with
retries and a timeout, a DestinationRule with a connection pool and outlier detection. The server runs as
`python -m controlplane serve --insecure-xds` (a temp config dir, OS-chosen free ports). The K streams
are delta xDS clients in a separate process (`ads_load_client.py --delta --distinct-identity --hold`):
each has its own node id, labels, inbound address and service account, i.e. its own proxy shape.

Per point (K) and repetition it measures
- connect → all ACKed: client clock from the first request to the last stream having ACKed CDS, EDS,
  LDS and RDS;
- one-line edit → all ACKed: the VirtualService timeout of one service changes in its file; latency from
  the write (wall clock) to each stream having received and ACKed the new Route response, p50/p99 over
  the K streams (and max);
- server CPU (utime+stime from /proc/<pid>/stat) over the connect and over the edit; server RSS
  (VmRSS) after the connect;
- /healthz latency (max and p99) polled every 20 ms during the connect storm and during the edit.

From the medians over repetitions: per-shape marginal cost (t_Kmax - t_Kmin)/(Kmax - Kmin), memory per
distinct sidecar (RSS_Kmax - RSS_Kmin)/(Kmax - Kmin), and the growth law (log-log slope of connect time,
edit time and RSS in K). It talks to the server over gRPC and HTTP only, so it runs against any checkout:
`--server-root DIR` serves DIR's controlplane package. Results merge into bench/results/scale.{json,md}
under `--label` (e.g. "before", "after"), with the machine and date.

    .venv/bin/python bench/scale.py --label after            # K = 10, 100, 500; 3 repetitions
    .venv/bin/python bench/scale.py --ks 10 --reps 1 --no-write   # a quick smoke run
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import mesh_policy
from machine import describe_machine
from mesh_policy import POOL_RETRY_BUDGET_AND_OUTLIER, service_file

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
CLIENT = BENCH / "ads_load_client.py"
RESULT_PREFIX = "ADS_LOAD_RESULT "
MARKED_LINE = "ADS_LOAD_MARKED"
EDIT_PREFIX = "ADS_LOAD_EDIT "
EDITED_SERVICE = 0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------------------
# policy


def service_yaml(index: int, timeout_s: int = 5) -> str:
    return mesh_policy.service_yaml(index, timeout=f"{timeout_s}s", retries=True,
                                    traffic_policy=POOL_RETRY_BUDGET_AND_OUTLIER)


def write_policy(directory: Path, services: int) -> None:
    mesh_policy.write_policy(directory, services, service_yaml)


def edit_policy(directory: Path, timeout_s: int) -> None:
    """The one-line edit: a VirtualService timeout (changes one route, in every sidecar's route table)."""
    path = service_file(directory, EDITED_SERVICE)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(service_yaml(EDITED_SERVICE, timeout_s))
    temporary.replace(path)  # atomic: the watcher never reads half a file


# ---------------------------------------------------------------------------------------------------------
# the server process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    # fields after the ")" of the command name: utime and stime are the 14th and 15th of the whole line
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def http_get(port: int, path: str, timeout: float) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


class Server:
    def __init__(self, root: Path, config: Path, work: Path, log: IO[bytes]) -> None:
        self.xds_port, self.admin_port = free_port(), free_port()
        argv = [
            sys.executable, "-m", "controlplane", "--log-level", "WARNING", "serve",
            "--config", str(config), "--xds-address", f"127.0.0.1:{self.xds_port}",
            "--admin-address", f"127.0.0.1:{self.admin_port}", "--ca-dir", str(work / "ca"), "--insecure-xds",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(root)}
        self.process = subprocess.Popen(argv, cwd=root, env=env, stdout=log, stderr=log)
        self.started = time.perf_counter()

    def wait_ready(self, timeout: float) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}")
            try:
                if http_get(self.admin_port, "/readyz", 1.0) == 200:
                    return time.perf_counter() - self.started
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError("the server did not become ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class HealthProbe:
    """GET /healthz every 20 ms in a thread; the latencies tell whether heavy work blocks the server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                http_get(self.port, "/healthz", 30.0)
            except OSError:
                self.failures += 1
            self.latencies.append(time.perf_counter() - started)
            self._stop.wait(0.02)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(35)
        ordered = sorted(self.latencies)
        return {
            "probes": len(ordered),
            "failures": self.failures,
            "max_ms": ordered[-1] * 1000 if ordered else None,
            "p99_ms": percentile(ordered, 0.99) * 1000 if ordered else None,
        }


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def read_line(stream: IO[str], prefix: str, timeout: float, process: subprocess.Popen[str]) -> str:
    """The next stdout line of the client starting with prefix (the client prints nothing else there)."""
    result: list[str] = []

    def read() -> None:
        for line in stream:
            if line.startswith(prefix):
                result.append(line[len(prefix) :].strip())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not result:
        raise TimeoutError(f"no {prefix.strip()} line from the client (exit code {process.poll()})")
    return result[0]


# ---------------------------------------------------------------------------------------------------------
# one point


def run_point(args: argparse.Namespace, streams: int, repetition: int, logs: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cp-scale-") as temp:
        work = Path(temp)
        config = work / "policy"
        write_policy(config, args.services)
        tag = f"k{streams}-r{repetition}"
        with (logs / f"server-{tag}.log").open("wb") as server_log, \
                (logs / f"client-{tag}.log").open("wb") as client_log:  # fmt: skip
            server = Server(args.server_root, config, work, server_log)
            client: subprocess.Popen[str] | None = None
            try:
                ready_s = server.wait_ready(args.timeout)
                pid = server.process.pid
                row: dict[str, Any] = {"streams": streams, "repetition": repetition, "ready_s": ready_s}
                row["rss_idle_mb"] = rss_mb(pid)
                cpu0 = cpu_seconds(pid)
                probe = HealthProbe(server.admin_port)
                client = subprocess.Popen(
                    [sys.executable, str(CLIENT), "--target", f"127.0.0.1:{server.xds_port}",
                     "--streams", str(streams), "--delta", "--distinct-identity", "--hold",
                     "--node-prefix", f"scale-{tag}", "--timeout", str(args.timeout)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=client_log, text=True,
                )  # fmt: skip
                assert client.stdin is not None and client.stdout is not None
                connect = json.loads(read_line(client.stdout, RESULT_PREFIX, args.timeout + 60, client))
                row["health_connect"] = probe.stop()
                cpu1 = cpu_seconds(pid)
                row["connect"] = {key: connect[key] for key in (
                    "all_synced", "synced", "wall_s", "median_synced_s", "errors", "first_error",
                    "bytes_per_stream_mean", "client_cpu_s")}  # fmt: skip
                row["connect_cpu_s"] = cpu1 - cpu0
                row["rss_connected_mb"] = rss_mb(pid)
                if connect["all_synced"]:
                    time.sleep(args.settle)  # let the last ACKs and any deferred work finish
                    client.stdin.write("mark\n")
                    client.stdin.flush()
                    read_line(client.stdout, MARKED_LINE, 30, client)
                    cpu2 = cpu_seconds(pid)
                    probe = HealthProbe(server.admin_port)
                    edit_policy(config, 6 + repetition)
                    edited = time.time()
                    client.stdin.write(f"wait {edited!r} {args.timeout}\n")
                    client.stdin.flush()
                    edit = json.loads(read_line(client.stdout, EDIT_PREFIX, args.timeout + 60, client))
                    row["health_edit"] = probe.stop()
                    row["edit_cpu_s"] = cpu_seconds(pid) - cpu2
                    latencies = edit.pop("latencies_s")
                    edit["p50_s"] = percentile(latencies, 0.5) if latencies else None
                    edit["p99_s"] = percentile(latencies, 0.99) if latencies else None
                    edit["max_s"] = latencies[-1] if latencies else None
                    row["edit"] = edit
                    row["rss_after_edit_mb"] = rss_mb(pid)
                client.stdin.close()
                client.wait(60)
                return row
            finally:
                if client is not None and client.poll() is None:
                    client.kill()
                    client.wait(10)
                server.stop()


# ---------------------------------------------------------------------------------------------------------
# summary


def _median(rows: Sequence[dict[str, Any]], *path: str) -> float | None:
    values = []
    for row in rows:
        value: Any = row
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            values.append(float(value))
    return statistics.median(values) if values else None


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    points: dict[int, dict[str, Any]] = {}
    for k in sorted({row["streams"] for row in rows}):
        mine = [row for row in rows if row["streams"] == k]
        ok = [row for row in mine if row["connect"]["all_synced"]]
        points[k] = {
            "repetitions": len(mine),
            "complete": len(ok),
            "connect_s": _median(ok, "connect", "wall_s"),
            "edit_p50_s": _median(ok, "edit", "p50_s"),
            "edit_p99_s": _median(ok, "edit", "p99_s"),
            "edit_max_s": _median(ok, "edit", "max_s"),
            "connect_cpu_s": _median(ok, "connect_cpu_s"),
            "edit_cpu_s": _median(ok, "edit_cpu_s"),
            "rss_idle_mb": _median(ok, "rss_idle_mb"),
            "rss_connected_mb": _median(ok, "rss_connected_mb"),
            "health_connect_max_ms": _median(mine, "health_connect", "max_ms"),
            "health_edit_max_ms": _median(ok, "health_edit", "max_ms"),
        }
    derived: dict[str, Any] = {}
    usable = [k for k, p in points.items() if p["connect_s"] is not None]
    if len(usable) >= 2:
        low, high = min(usable), max(usable)
        lo, hi = points[low], points[high]
        span = high - low
        derived["from_to"] = [low, high]
        derived["marginal_connect_ms_per_shape"] = (hi["connect_s"] - lo["connect_s"]) / span * 1000
        if hi["edit_p99_s"] is not None and lo["edit_p99_s"] is not None:
            derived["marginal_edit_ms_per_shape"] = (hi["edit_p99_s"] - lo["edit_p99_s"]) / span * 1000
        if hi["rss_connected_mb"] is not None and lo["rss_connected_mb"] is not None:
            derived["memory_kb_per_sidecar"] = (hi["rss_connected_mb"] - lo["rss_connected_mb"]) / span * 1024
        # growth law: the exponent b of y ~ K^b between the smallest and largest K (1 = linear)
        for name, key in (("connect", "connect_s"), ("edit_p99", "edit_p99_s"), ("rss", "rss_connected_mb")):
            a, b = lo[key], hi[key]
            if a and b:
                derived[f"exponent_{name}"] = math.log(b / a) / math.log(high / low)
    return {"points": {str(k): v for k, v in points.items()}, "derived": derived}


def _f(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def render(report: dict[str, Any]) -> str:
    lines = [
        "# Scale: N services, K distinct sidecars (bench/scale.py)",
        "",
        "Real `controlplane serve --insecure-xds`; K delta xDS streams in a separate process "
        "(`ads_load_client.py --distinct-identity`: each stream has its own labels, inbound address and "
        "service account). Policy per service: ServiceEntry (2 endpoints), VirtualService (retries, "
        "timeout), DestinationRule (pool, outlier detection), one file each. *connect*: first request → "
        "last stream ACKed all four types. *edit*: one VirtualService timeout changed in its file → each "
        "stream ACKed the new routes (p50/p99 over the streams). CPU: server utime+stime. RSS: server "
        "VmRSS after the connect. *healthz max*: slowest GET /healthz (every 20 ms) during the connect "
        "storm / the edit. Medians over the repetitions shown.",
        "",
    ]
    for label, run in report.get("runs", {}).items():
        meta = run["meta"]
        lines += [
            f"## {label}: {meta['date']}, commit {meta.get('commit', '?')}, N = {meta['services']:,}",
            "",
            f"Machine: {meta['machine']['cpu_model']}, {meta['machine']['cores']} cores, "
            f"{meta['machine']['memory_gb']} GB, {meta['machine']['python']}, load at start "
            f"{meta['machine']['load_average_at_start']}. {meta.get('note', '')}",
            "",
            "| K | reps | connect s | edit p50 s | edit p99 s | CPU connect s | CPU edit s | RSS idle MB "
            "| RSS connected MB | healthz max ms (connect / edit) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for k, p in run["summary"]["points"].items():
            lines.append(
                f"| {int(k):,} | {p['complete']}/{p['repetitions']} | {_f(p['connect_s'])} | "
                f"{_f(p['edit_p50_s'], 3)} | {_f(p['edit_p99_s'], 3)} | {_f(p['connect_cpu_s'])} | "
                f"{_f(p['edit_cpu_s'])} | {_f(p['rss_idle_mb'], 0)} | {_f(p['rss_connected_mb'], 0)} | "
                f"{_f(p['health_connect_max_ms'], 0)} / {_f(p['health_edit_max_ms'], 0)} |"
            )
        d = run["summary"]["derived"]
        if d:
            low, high = d["from_to"]
            lines += [
                "",
                f"- per-shape marginal cost, connect (t{high} - t{low})/{high - low}: "
                f"{_f(d.get('marginal_connect_ms_per_shape'), 1)} ms; edit p99: "
                f"{_f(d.get('marginal_edit_ms_per_shape'), 1)} ms",
                f"- server memory per distinct sidecar: {_f(d.get('memory_kb_per_sidecar'), 0)} KB",
                f"- growth law (y ∝ K^b, K {low}→{high}): connect b = {_f(d.get('exponent_connect'))}, "
                f"edit p99 b = {_f(d.get('exponent_edit_p99'))}, RSS b = {_f(d.get('exponent_rss'))}",
            ]
        failed = [r for r in run["rows"] if not r["connect"]["all_synced"]]
        for row in failed:
            lines.append(
                f"- K={row['streams']} rep {row['repetition']}: only {row['connect']['synced']} synced; "
                f"first error {row['connect']['first_error']}"
            )
        lines.append("")
    return "\n".join(lines)


def _commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--ks", default="10,100,500", help="comma-separated K (distinct sidecars)")
    parser.add_argument("--with-2000", action="store_true", help="add the K = 2,000 point")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--reps-at", default="", help="per-K repetitions, e.g. '500:1,2000:1'")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per phase before giving up")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between connect and edit")
    parser.add_argument("--server-root", type=Path, default=ROOT, help="checkout whose controlplane serves")
    parser.add_argument("--label", default="current", help="name of this run in scale.json (before/after)")
    parser.add_argument("--note", default="", help="a sentence recorded with the run")
    parser.add_argument("--keep-logs", type=Path, default=None, help="keep server/client stderr here")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    args.server_root = args.server_root.resolve()
    ks = [int(k) for k in args.ks.split(",") if k]
    if args.with_2000:
        ks.append(2000)
    reps = {k: args.reps for k in ks}
    for item in filter(None, args.reps_at.split(",")):
        k, n = item.split(":")
        reps[int(k)] = int(n)
    logs = args.keep_logs or Path(tempfile.mkdtemp(prefix="cp-scale-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(args.server_root),
        "services": args.services,
        "machine": describe_machine(("grpcio", "protobuf", "xds-protos")),
        "note": args.note,
    }
    rows: list[dict[str, Any]] = []
    json_path = RESULTS / "scale.json"

    def save() -> dict[str, Any]:
        # after every point, so an interrupted run still leaves its rows
        run = {"meta": meta, "rows": rows, "summary": summarize(rows)}
        report: dict[str, Any] = json.loads(json_path.read_text()) if json_path.exists() else {}
        report.setdefault("runs", {})[args.label] = run
        if not args.no_write:
            RESULTS.mkdir(exist_ok=True)
            json_path.write_text(json.dumps(report, indent=2) + "\n")
            (RESULTS / "scale.md").write_text(render(report))
        return run

    try:
        for repetition in range(max(reps.values())):
            for k in ks:  # interleaved: drifting machine load spreads over every K alike
                if repetition < reps[k]:
                    row = run_point(args, k, repetition, logs)
                    rows.append(row)
                    c, e = row["connect"], row.get("edit", {})
                    print(f"K={k:>5} rep {repetition}: connect {_f(c['wall_s'])} s ({c['synced']}/{k}), "
                          f"edit p50 {_f(e.get('p50_s'), 3)} p99 {_f(e.get('p99_s'), 3)} s, "
                          f"CPU {_f(row['connect_cpu_s'])}+{_f(row.get('edit_cpu_s'))} s, "
                          f"RSS {_f(row['rss_connected_mb'], 0)} MB, healthz max/p99 connect "
                          f"{_f(row['health_connect'].get('max_ms'), 0)}/"
                          f"{_f(row['health_connect'].get('p99_ms'), 0)} ms, edit "
                          f"{_f(row.get('health_edit', {}).get('max_ms'), 0)}/"
                          f"{_f(row.get('health_edit', {}).get('p99_ms'), 0)} ms", flush=True)  # fmt: skip
                    save()
    finally:
        if args.keep_logs is None:
            shutil.rmtree(logs, ignore_errors=True)
    print(render({"runs": {args.label: save()}}))
    return 0 if all(r["connect"]["all_synced"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
