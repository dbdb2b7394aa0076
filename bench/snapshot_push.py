"""Benchmark: build snapshots for N services and push them to K ADS streams.

For each N (default 100, 1,000, 5,000) it writes policy YAML into a temp dir — per service one STATIC
ServiceEntry with one endpoint on 127.0.0.1 and one VirtualService with a uri-prefix route — and times the
pipeline stage by stage: load (`load_policy_dir`) → build (`build_proxy`) → translate (`translate_proxy`)
→ `Snapshot.build` (+ `consistency_errors`, which the cache runs before publishing a snapshot).

Then, for each (N, K) point (K default 1, 100, 1,000), it starts a fresh server worker — this script with
`--worker`: the real `XdsServer` + `SnapshotCache` in its own process, fed by `make_factory` exactly as
`controlplane serve` does, its snapshot pre-built so that the push measures serving, not building — and a
separate load client process (`bench/ads_load_client.py`) holding K streams, each a distinct node id with
identical metadata (one shared snapshot). Measured: wall time from the first request until every stream
has received and ACKed all four types (client clock), the server's CPU time (getrusage, all threads) and
peak RSS (VmHWM, reset just before the push) over the push, and bytes received per stream.
Extra points: delta xDS, and distinct `outbound_address` metadata per stream (K snapshots, built on demand).

A fresh worker per point keeps one point's memory and warm caches out of the next. Every subprocess is
stopped by PID when its point ends, also on failure.

    .venv/bin/python bench/snapshot_push.py            # full run (~2-3 min on 2 cores)
    .venv/bin/python bench/snapshot_push.py --quick    # ~15 s smoke run
    .venv/bin/python bench/snapshot_push.py --services 1000 --streams 100 --delta-points '' --no-write

Results: bench/results/snapshot_push.{md,json} (quick runs: snapshot_push-quick.{md,json}).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime
import gc
import io
import itertools
import json
import logging
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mesh_policy
from machine import describe_machine

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CLIENT = HERE / "ads_load_client.py"
RESULT_PREFIX = "ADS_LOAD_RESULT "  # ads_load_client.RESULT_PREFIX
EVENT_PREFIX = "BENCH_WORKER "
MB = 1024 * 1024

FULL_SERVICES = (100, 1_000, 5_000)
FULL_STREAMS = (1, 100, 1_000)
FULL_DELTA = ((1_000, 100), (1_000, 1_000))
FULL_DISTINCT = ((100, 100), (1_000, 20))
QUICK_SERVICES = (100, 1_000)
QUICK_STREAMS = (1, 100)
QUICK_DELTA = ((1_000, 100),)
QUICK_DISTINCT = ((100, 100),)


# ---------------------------------------------------------------------------------------------------------
# policy generation


def service_yaml(index: int) -> str:
    """A ServiceEntry with one endpoint and a VirtualService with one plain route."""
    return mesh_policy.service_yaml(index, endpoints=1)


def write_policy(directory: Path, services: int) -> None:
    """One file per service (a ServiceEntry and a VirtualService), as a config repository would have."""
    mesh_policy.write_policy(directory, services, service_yaml)


# ---------------------------------------------------------------------------------------------------------
# stage timing (in this process)


def time_stages(policy_dir: Path, services: int, repeat: int) -> dict[str, Any]:
    from controlplane.api.loader import load_policy_dir
    from controlplane.model import build_proxy
    from controlplane.model.identity import ProxyIdentity
    from controlplane.translate.resources import PUSH_ORDER, SHORT_NAMES
    from controlplane.translate.translator import translate_proxy
    from controlplane.xds.snapshot import Interner, Snapshot

    runs: list[dict[str, float]] = []
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for _ in range(repeat):
        gc.collect()
        times: dict[str, float] = {}
        started = time.perf_counter()
        policy, diagnostics = load_policy_dir(policy_dir)
        times["load"] = _lap(started)
        if diagnostics or len(policy) != 2 * services:
            raise RuntimeError(
                f"generated policy does not load cleanly: {len(policy)} objects, "
                f"{len(diagnostics)} problems, first: {diagnostics[:1]}"
            )
        started = time.perf_counter()
        model = build_proxy(policy, ProxyIdentity())
        times["build"] = _lap(started)
        started = time.perf_counter()
        resources = translate_proxy(model)
        times["translate"] = _lap(started)
        started = time.perf_counter()
        snapshot = Snapshot.build(resources, Interner())
        times["snapshot"] = _lap(started)
        started = time.perf_counter()
        errors = snapshot.consistency_errors()
        times["consistency"] = _lap(started)
        if errors:
            raise RuntimeError(f"inconsistent snapshot: {errors[:3]}")
        times["total"] = sum(times.values())
        runs.append(times)
        counts = {SHORT_NAMES[t]: len(snapshot.of_type(t)) for t in PUSH_ORDER}
        sizes = {
            SHORT_NAMES[t]: sum(len(r.any_payload) for r in snapshot.of_type(t).values()) for t in PUSH_ORDER
        }
        del policy, model, resources, snapshot
    best = {stage: min(run[stage] for run in runs) for stage in runs[0]}
    median = {stage: statistics.median(run[stage] for run in runs) for stage in runs[0]}
    return {
        "services": services,
        "repeat": repeat,
        "min_s": best,
        "median_s": median,
        "resources": counts,
        "resource_bytes": sizes,
    }


def _lap(started: float) -> float:
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------------------
# server worker (a subprocess of the orchestrator)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak covers the push only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _emit(event: str, **data: Any) -> None:
    sys.stdout.write(EVENT_PREFIX + json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


async def worker(policy_dir: Path, prewarm: bool, profile: Path | None) -> None:
    from controlplane.api.loader import load_policy_dir
    from controlplane.app import make_factory
    from controlplane.model.identity import ProxyIdentity
    from controlplane.translate.resources import PUSH_ORDER, SHORT_NAMES
    from controlplane.xds.cache import SnapshotCache
    from controlplane.xds.server import XdsServer
    from controlplane.xds.status import StatusRegistry

    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    policy, diagnostics = load_policy_dir(policy_dir)
    if diagnostics:
        raise RuntimeError(f"policy has {len(diagnostics)} problems, first: {diagnostics[0]}")
    cache = SnapshotCache(make_factory(policy))
    registry = StatusRegistry()
    server = XdsServer(cache, registry, "127.0.0.1:0")
    await server.start()
    held = cache.watch(ProxyIdentity()) if prewarm else None  # builds the snapshot every stream shares
    gc.collect()
    _emit(
        "ready",
        port=server.port,
        setup_s=time.perf_counter() - started,
        rss_mb=_status_kb("VmRSS") / 1024,
        peak_rss_mb=_status_kb("VmHWM") / 1024,
    )
    try:
        await loop.run_in_executor(None, sys.stdin.readline)  # "start"
        reset = _reset_peak_rss()
        rss_before = _status_kb("VmRSS")
        profiler = cProfile.Profile() if profile else None
        cpu_before, wall_before = _cpu_seconds(), time.perf_counter()
        if profiler:
            profiler.enable()
        _emit("started")
        await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
        if profiler:
            profiler.disable()
        cpu, wall = _cpu_seconds() - cpu_before, time.perf_counter() - wall_before
        peak = _status_kb("VmHWM")
        if profiler and profile:
            profiler.dump_stats(str(profile))
        _emit(
            "stats",
            cpu_s=cpu,
            window_s=wall,
            rss_before_mb=rss_before / 1024,
            rss_after_mb=_status_kb("VmRSS") / 1024,
            peak_rss_mb=peak / 1024 if reset else None,
            ru_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            open_streams=len(registry.streams),
            shapes=len(cache.shapes()),
            # fewest resources of each type in any live shape (a failed build serves an empty snapshot)
            min_resources={
                SHORT_NAMES[t]: min((len(snap.of_type(t)) for snap, _ in cache.shapes().values()), default=0)
                for t in PUSH_ORDER
            },
            interned_resources=len(cache.interner),
        )
    finally:
        if held is not None:
            held.cancel()
        await server.close(0.5)


# ---------------------------------------------------------------------------------------------------------
# orchestration of one push point


@dataclass(frozen=True)
class Point:
    services: int
    streams: int
    protocol: str = "sotw"
    distinct_metadata: bool = False

    @property
    def label(self) -> str:
        meta = "distinct" if self.distinct_metadata else "shared"
        return f"{self.protocol} N={self.services} K={self.streams} metadata={meta}"


async def _read_prefixed(stream: asyncio.StreamReader, prefix: str, timeout: float) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        while True:
            line = await stream.readline()
            if not line:
                raise RuntimeError("the process exited early")
            text = line.decode(errors="replace")
            if text.startswith(prefix):
                data: dict[str, Any] = json.loads(text[len(prefix) :])
                return data

    return await asyncio.wait_for(read(), timeout)


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


async def _stop(process: asyncio.subprocess.Process, grace: float) -> None:
    """Stop one process we started, by its PID: close its stdin, wait, then kill."""
    if process.returncode is None and process.stdin is not None and not process.stdin.is_closing():
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def run_point(
    point: Point, policy_dir: Path, log_dir: Path, timeout: float, profile: Path | None
) -> dict[str, Any]:
    python = sys.executable
    tag = f"{point.protocol}-{point.services}-{point.streams}{'-distinct' if point.distinct_metadata else ''}"
    server_log, client_log = log_dir / f"server-{tag}.log", log_dir / f"client-{tag}.log"
    processes: list[asyncio.subprocess.Process] = []
    result: dict[str, Any] = {"point": point.__dict__}
    try:
        worker_args = [python, str(Path(__file__).resolve()), "--worker", "--policy-dir", str(policy_dir)]
        if point.distinct_metadata:
            worker_args.append("--no-prewarm")
        if profile is not None:
            worker_args += ["--profile-out", str(profile)]
        with server_log.open("wb") as err:
            server = await asyncio.create_subprocess_exec(
                *worker_args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err
            )
        processes.append(server)
        assert server.stdin is not None and server.stdout is not None
        ready = await _read_prefixed(server.stdout, EVENT_PREFIX, 300)
        result["server_setup"] = ready
        server.stdin.write(b"start\n")
        await server.stdin.drain()
        await _read_prefixed(server.stdout, EVENT_PREFIX, 30)
        client_args = [
            python,
            str(CLIENT),
            "--target",
            f"127.0.0.1:{ready['port']}",
            "--streams",
            str(point.streams),
            "--timeout",
            str(timeout),
            "--hold",
        ]
        if point.protocol == "delta":
            client_args.append("--delta")
        if point.distinct_metadata:
            client_args.append("--distinct-metadata")
        with client_log.open("wb") as err:
            client = await asyncio.create_subprocess_exec(
                *client_args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err
            )
        processes.append(client)
        assert client.stdout is not None
        result["client"] = await _read_prefixed(client.stdout, RESULT_PREFIX, timeout + 120)
        server.stdin.write(b"stop\n")
        await server.stdin.drain()
        result["server"] = await _read_prefixed(server.stdout, EVENT_PREFIX, 60)
        await _stop(client, 30)
        await _stop(server, 30)
        result["exit_codes"] = {"client": client.returncode, "server": server.returncode}
        served = result["server"]["min_resources"]
        if served["clusters"] < point.services or served["endpoints"] < point.services:
            raise RuntimeError(
                f"the server served {served}, expected {point.services} clusters and endpoints"
            )
        if result["client"].get("errors") or not result["client"].get("all_synced"):
            result["server_log_tail"] = _tail(server_log)
            result["client_log_tail"] = _tail(client_log)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["server_log_tail"] = _tail(server_log)
        result["client_log_tail"] = _tail(client_log)
    finally:
        for process in reversed(processes):
            if process.returncode is None:
                await _stop(process, 5)
    return result


# ---------------------------------------------------------------------------------------------------------
# report


def machine() -> dict[str, Any]:
    return describe_machine(("grpcio", "protobuf", "xds-protos", "pydantic", "PyYAML"))


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.1f}x"


def _verdict(a: float | None, b: float | None, size: float) -> str:
    """Linear when the cost ratio is within 1.5x of the size ratio either way."""
    if not a or not b:
        return "n/a"
    per_unit = a / b / size
    if per_unit > 1.5:
        return f"**superlinear** ({per_unit:.1f}x the cost per unit)"
    if per_unit < 1 / 1.5:
        return f"sublinear ({per_unit:.2f}x the cost per unit: fixed costs dominate)"
    return "linear"


def render_markdown(report: dict[str, Any]) -> str:
    out: list[str] = []
    m = report["machine"]
    out += [
        "# Snapshot build and push benchmark",
        "",
        f"Generated by `bench/snapshot_push.py{' --quick' if report['quick'] else ''}` on "
        f"{report['date']} in {report['duration_s']:.0f} s.",
        "",
        f"- Machine: `{m['uname']}`",
        f"- CPU: {m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable), {m['memory_gb']} GB RAM",
        f"- Python: {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        "",
        "Policy per service: one STATIC ServiceEntry (one endpoint on 127.0.0.1) and one VirtualService "
        "(one uri-prefix route), one YAML file each. A sidecar gets one cluster and one "
        "ClusterLoadAssignment per service, one listener and one route configuration (one virtual host per "
        "service).",
        "",
        "## Snapshot build (one proxy shape, in process)",
        "",
        f"Seconds, best of {report['stages'][0]['repeat'] if report['stages'] else 0} "
        "(median in the JSON). `consistency` is the check the cache runs before publishing.",
        "",
        "| N services | load | build | translate | Snapshot.build | consistency | total | µs/service "
        "| clusters / endpoints / listeners / routes | resource bytes |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for stage in report["stages"]:
        t, n = stage["min_s"], stage["services"]
        counts = stage["resources"]
        out.append(
            f"| {n:,} | {t['load']:.3f} | {t['build']:.3f} | {t['translate']:.3f} | {t['snapshot']:.3f} "
            f"| {t['consistency']:.4f} | {t['total']:.3f} | {t['total'] / n * 1e6:.0f} "
            f"| {counts['clusters']} / {counts['endpoints']} / {counts['listeners']} / {counts['routes']} "
            f"| {sum(stage['resource_bytes'].values()):,} |"
        )
    out += [
        "",
        "## Push to K ADS streams",
        "",
        "Server: real `XdsServer` in a fresh worker process per row, snapshot pre-built (rows with distinct "
        "metadata build one snapshot per stream while serving). Client: `bench/ads_load_client.py` in "
        "another process, ~128 streams per gRPC channel. *wall*: first request → every stream has received "
        "and ACKed CDS, EDS, LDS and RDS (client clock). *server CPU*: user+sys of the server process over "
        "the push. *peak RSS*: server VmHWM reset just before the push; *Δ RSS*: peak minus RSS before the "
        "push. Both processes share the same cores, so wall time includes the client's work.",
        "",
        "| protocol | metadata | N | K | wall s | median stream s | server CPU s | CPU ms/stream "
        "| peak RSS MB | Δ RSS MB | KB/stream | client CPU s | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["push"]:
        p = row["point"]
        c, s = row.get("client", {}), row.get("server", {})
        status = "ok"
        if "error" in row:
            status = "ERROR: " + row["error"][:80]
        elif not c.get("all_synced"):
            status = f"{c.get('synced')}/{p['streams']} synced; {c.get('first_error')}"
        elif c.get("extra_responses"):
            status = f"ok, {c['extra_responses']} extra responses"
        peak, before = s.get("peak_rss_mb"), s.get("rss_before_mb")
        out.append(
            f"| {p['protocol']} | {'distinct' if p['distinct_metadata'] else 'shared'} | {p['services']:,} "
            f"| {p['streams']:,} | {_fmt(c.get('wall_s'), 3)} | {_fmt(c.get('median_synced_s'), 3)} "
            f"| {_fmt(s.get('cpu_s'))} | {_fmt(s['cpu_s'] * 1000 / p['streams'] if s else None, 1)} "
            f"| {_fmt(peak, 0)} | {_fmt(peak - before if peak and before else None, 0)} "
            f"| {_fmt(c['bytes_per_stream_mean'] / 1024 if c else None, 1)} | {_fmt(c.get('client_cpu_s'))} "
            f"| {status} |"
        )
    out += ["", "## Does cost grow linearly?", "", *analysis(report), ""]
    if report.get("profile"):
        out += [
            "## Server profile",
            "",
            f"cProfile of the server worker during {report['profile']['point']} "
            "(top functions by cumulative and by own time):",
            "",
            "```",
            report["profile"]["text"].rstrip(),
            "```",
            "",
        ]
    return "\n".join(out)


def _push_index(report: dict[str, Any]) -> dict[tuple[str, bool, int, int], dict[str, Any]]:
    index = {}
    for row in report["push"]:
        p = row["point"]
        if "client" in row and "server" in row and row["client"].get("all_synced"):
            index[(p["protocol"], p["distinct_metadata"], p["services"], p["streams"])] = row
    return index


def analysis(report: dict[str, Any]) -> list[str]:
    """Ratios within this run: cost(a)/cost(b) next to the size ratio a/b (linear means they match)."""
    lines: list[str] = []
    stages = sorted(report["stages"], key=lambda s: s["services"])
    for small, large in itertools.pairwise(stages):
        factor = large["services"] / small["services"]
        parts = ", ".join(
            f"{stage} {_ratio(large['min_s'][stage], small['min_s'][stage])}"
            for stage in ("load", "build", "translate", "snapshot", "total")
        )
        verdicts = ", ".join(
            f"{stage} {_verdict(large['min_s'][stage], small['min_s'][stage], factor)}"
            for stage in ("load", "build", "total")
        )
        lines.append(
            f"- Build, N {small['services']:,} → {large['services']:,} (x{factor:.0f}): {parts}. {verdicts}."
        )
    index = _push_index(report)
    services = sorted({key[2] for key in index})
    streams = sorted({key[3] for key in index})
    for n in services:
        rows = [(k, index[("sotw", False, n, k)]) for k in streams if ("sotw", False, n, k) in index]
        for (k1, r1), (k2, r2) in itertools.pairwise(rows):
            lines.append(
                f"- SotW push, N={n:,}, K {k1:,} → {k2:,} (x{k2 / k1:.0f}): wall "
                f"{_ratio(r2['client']['wall_s'], r1['client']['wall_s'])}, server CPU "
                f"{_ratio(r2['server']['cpu_s'], r1['server']['cpu_s'])}, bytes "
                f"{_ratio(r2['client']['bytes_total'], r1['client']['bytes_total'])}; server CPU "
                f"{_verdict(r2['server']['cpu_s'], r1['server']['cpu_s'], k2 / k1)}."
            )
    for k in streams:
        rows = [(n, index[("sotw", False, n, k)]) for n in services if ("sotw", False, n, k) in index]
        for (n1, r1), (n2, r2) in itertools.pairwise(rows):
            lines.append(
                f"- SotW push, K={k:,}, N {n1:,} → {n2:,} (x{n2 / n1:.0f}): wall "
                f"{_ratio(r2['client']['wall_s'], r1['client']['wall_s'])}, server CPU "
                f"{_ratio(r2['server']['cpu_s'], r1['server']['cpu_s'])}, bytes/stream "
                f"{_ratio(r2['client']['bytes_per_stream_mean'], r1['client']['bytes_per_stream_mean'])}; "
                f"server CPU {_verdict(r2['server']['cpu_s'], r1['server']['cpu_s'], n2 / n1)}."
            )
    for (protocol, distinct, n, k), row in sorted(index.items()):
        peak, before = row["server"].get("peak_rss_mb"), row["server"].get("rss_before_mb")
        if protocol == "sotw" and not distinct and k == max(streams) and peak and before:
            payload = k * row["client"]["bytes_per_stream_mean"] / MB
            lines.append(
                f"- Push memory, SotW N={n:,}, K={k:,}: server RSS grew {peak - before:,.0f} MB during the "
                f"push, {(peak - before) / payload:.2f}x the {payload:,.0f} MB that all streams received: "
                "every stream's responses are separate copies while they are written (O(N*K))."
            )
    for (protocol, distinct, n, k), row in sorted(index.items()):
        base = index.get(("sotw", False, n, k))
        if (protocol, distinct) == ("sotw", False) or base is None:
            continue
        what = "delta" if protocol == "delta" else "distinct metadata"
        lines.append(
            f"- {what} vs SotW shared at N={n:,}, K={k:,}: wall "
            f"{_ratio(row['client']['wall_s'], base['client']['wall_s'])}, server CPU "
            f"{_ratio(row['server']['cpu_s'], base['server']['cpu_s'])}, bytes/stream "
            f"{_ratio(row['client']['bytes_per_stream_mean'], base['client']['bytes_per_stream_mean'])}, "
            f"peak RSS {_fmt(row['server'].get('peak_rss_mb'), 0)} vs "
            f"{_fmt(base['server'].get('peak_rss_mb'), 0)} MB."
        )
    if report.get("notes"):
        lines += ["", *report["notes"]]
    return lines


# ---------------------------------------------------------------------------------------------------------
# main


def _points(text: str) -> list[tuple[int, int]]:
    points = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        n, _, k = item.partition(":")
        points.append((int(n), int(k)))
    return points


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _profile_text(path: Path, lines: int) -> str:
    buffer = io.StringIO()
    stats = pstats.Stats(str(path), stream=buffer)
    stats.strip_dirs().sort_stats("cumulative").print_stats(lines)
    stats.sort_stats("tottime").print_stats(lines)
    text = buffer.getvalue()
    # keep only the tables
    return "\n".join(
        line
        for line in text.splitlines()
        if line.strip()
        and "function calls" not in line
        and not line.startswith(("Ordered by", "   List reduced"))
    )


async def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    quick = args.quick
    services = args.services or list(QUICK_SERVICES if quick else FULL_SERVICES)
    streams = args.streams or list(QUICK_STREAMS if quick else FULL_STREAMS)
    delta = (
        _points(args.delta_points)
        if args.delta_points is not None
        else list(QUICK_DELTA if quick else FULL_DELTA)
    )
    distinct = (
        _points(args.distinct_points)
        if args.distinct_points is not None
        else list(QUICK_DISTINCT if quick else FULL_DISTINCT)
    )
    points = [Point(n, k) for n in services for k in streams]
    points += [Point(n, k, "delta") for n, k in delta]
    points += [Point(n, k, "sotw", True) for n, k in distinct]
    profile_point = _points(args.profile)[0] if args.profile else None

    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine(),
        "stages": [],
        "push": [],
    }
    root = Path(tempfile.mkdtemp(prefix="bench-snapshot-push-"))
    try:
        log_dir = root / "logs"
        log_dir.mkdir()
        dirs: dict[int, Path] = {}
        for n in sorted({p.services for p in points} | set(services)):
            dirs[n] = root / f"policy-{n}"
            write_policy(dirs[n], n)
            if n in services:
                repeat = args.repeat or (5 if n <= 100 else 3 if n <= 1000 else 2)
                stage = time_stages(dirs[n], n, repeat)
                report["stages"].append(stage)
                _progress(f"build N={n:,}: " + ", ".join(f"{k} {v:.3f}s" for k, v in stage["min_s"].items()))
        for point in points:
            profile = None
            if (
                profile_point == (point.services, point.streams)
                and point.protocol == "sotw"
                and not point.distinct_metadata
            ):
                profile = root / "server.prof"
            row = await run_point(point, dirs[point.services], log_dir, args.timeout, profile)
            report["push"].append(row)
            _progress(_summary(point, row))
            if profile is not None and profile.exists():
                report["profile"] = {"point": point.label, "text": _profile_text(profile, args.profile_lines)}
    finally:
        if args.keep_logs:
            shutil.copytree(root / "logs", args.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
    report["duration_s"] = time.perf_counter() - started
    return report


def _summary(point: Point, row: dict[str, Any]) -> str:
    if "error" in row:
        logs = f"{row.get('server_log_tail')}\n{row.get('client_log_tail')}"
        return f"{point.label}: ERROR {row['error']}\n{logs}"
    c, s = row["client"], row["server"]
    return (
        f"{point.label}: wall {c['wall_s']:.3f}s synced {c['synced']}/{point.streams} "
        f"server cpu {s['cpu_s']:.2f}s peak {_fmt(s['peak_rss_mb'], 0)}MB "
        f"{c['bytes_per_stream_mean'] / 1024:.1f}KB/stream client cpu {c['client_cpu_s']:.2f}s"
    )


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N=100,1000; K=1,100 (about 15 s)")
    parser.add_argument("--services", type=_ints, help="comma-separated N values")
    parser.add_argument("--streams", type=_ints, help="comma-separated K values")
    parser.add_argument("--delta-points", help="N:K[,N:K] run with delta xDS too ('' for none)")
    parser.add_argument("--distinct-points", help="N:K[,N:K] run with distinct metadata per stream")
    parser.add_argument("--repeat", type=int, default=0, help="stage timing repetitions (default by N)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per push point")
    parser.add_argument("--profile", help="N:K: cProfile the server during this SotW point")
    parser.add_argument("--profile-lines", type=int, default=25)
    parser.add_argument("--out", type=Path, help="output path without suffix (default bench/results/...)")
    parser.add_argument("--keep-logs", type=Path, help="copy the server and client logs to this directory")
    parser.add_argument("--no-write", action="store_true", help="print the markdown instead of writing files")
    parser.add_argument("--render", type=Path, help="re-render the markdown next to this results JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--policy-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-prewarm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.render:
        report = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(render_markdown(report))
        return 0
    if args.worker:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        asyncio.run(worker(args.policy_dir, not args.no_prewarm, args.profile_out))
        return 0

    report = asyncio.run(orchestrate(args))
    markdown = render_markdown(report)
    if args.no_write:
        print(markdown)
    else:
        out: Path = args.out or RESULTS / ("snapshot_push-quick" if args.quick else "snapshot_push")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown)
        _progress(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    failed = [row for row in report["push"] if "error" in row or not row["client"].get("all_synced")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
