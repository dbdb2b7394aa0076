"""Benchmark: `controlplane serve` from exec to a 200 on /readyz — the server process's CPU and wall time.

Issue 12's row "startup to ready with 5,000 ServiceEntries + routes". bench/policy_load.py measures the
policy store alone in process; this measures the real server: interpreter start, imports, the mesh CA,
the policy load and the first publish, until /readyz answers 200 (polled every 50 ms), with the same
policy as policy_load.py (one file per service: ServiceEntry, VirtualService, DestinationRule). CPU is the
server process's utime + stime (/proc, all threads) read right after the first 200. Also measured, as
the floor: the CPU of a Python that only imports the server's modules.

    .venv/bin/python bench/startup.py                               # N = 1,000 and 5,000, 5 runs each
    .venv/bin/python bench/startup.py --baseline /tmp/main-checkout   # another checkout, interleaved

Results: bench/results/startup.md.
"""

from __future__ import annotations

import argparse
import datetime
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import policy_load
from machine import describe_machine
from scale import Server, cpu_seconds

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def serve_to_ready(root: Path, config: Path, work: Path) -> tuple[float, float]:
    """(CPU s, wall s) of one server start until /readyz is 200."""
    with open(work / "server.log", "wb") as log:
        server = Server(root, config, work, log)
        try:
            wall = server.wait_ready(300.0)
            return cpu_seconds(server.process.pid), wall
        finally:
            server.stop()


def imports_only(root: Path) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", "import controlplane.cli, controlplane.app"], cwd=root,
                   env={"PYTHONPATH": str(root)}, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, nargs="+", default=[1_000, 5_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="also measure this checkout, interleaved")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    roots = [("this tree", HERE.parent)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    rows = []
    for services in args.services:
        with tempfile.TemporaryDirectory(prefix="startup-bench-") as temp:
            config = Path(temp) / "policy"
            config.mkdir()
            policy_load.write_policy(config, services)
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in roots}
            for repetition in range(args.repeat):
                for name, root in roots:  # interleaved: machine noise hits both alike
                    work = Path(temp) / f"{name.replace(' ', '-')}-{repetition}"
                    work.mkdir()
                    runs[name].append(serve_to_ready(root, config, work))
            for name, root in roots:
                cpus = sorted(cpu for cpu, _ in runs[name])
                walls = sorted(wall for _, wall in runs[name])
                floor = statistics.median(imports_only(root) for _ in range(3))
                row = {"code": name, "services": services, "cpu": statistics.median(cpus),
                       "cpu_runs": cpus, "wall": statistics.median(walls), "imports": floor}
                rows.append(row)
                print(f"{name} N={services}: CPU to ready {row['cpu']:.2f} s (runs {cpus}), wall "
                      f"{row['wall']:.2f} s, imports alone {floor:.2f} s", flush=True)
    table = ["| code | N services (objects) | server CPU exec → ready (median; runs) | wall "
             "| imports alone |",
             "|---|---|---|---|---|"]
    for row in rows:
        runs_text = ", ".join(f"{cpu:.2f}" for cpu in row["cpu_runs"])
        table.append(f"| {row['code']} | {row['services']:,} ({3 * row['services']:,}) | {row['cpu']:.2f} s "
                     f"({runs_text}) | {row['wall']:.2f} s | {row['imports']:.2f} s |")
    print("\n".join(table))
    if args.no_write:
        return
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = describe_machine(["pyyaml", "yaml-rs", "pydantic"])
    text = ["# Server startup to ready (bench/startup.py)", "",
            f"Run {stamp}; medians of {args.repeat} runs per row, rows of one N interleaved"
            + (f"; baseline = {args.baseline}" if args.baseline else "") + ".", "", *table, "",
            "Machine (shared: compare rows of one run as ratios):", "",
            *(f"- {key}: {value}" for key, value in machine.items()), ""]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "startup.md").write_text("\n".join(text))


if __name__ == "__main__":
    main()
