"""Benchmark: CPU time of the policy store (controlplane/policystore.py) — startup and reloads.

For each N (default 1,000 and 5,000) it writes one file per service into a temp dir: a STATIC
ServiceEntry with 2 endpoints, a VirtualService with retries and a timeout, and a DestinationRule with a
connection pool and outlier detection (issue 12's mesh). Then, in this process, it measures the CPU time
(`time.process_time`, all threads) of:

- startup: a fresh process's first `PolicyStore(dir).load()` (read, parse, validate every file,
  cross-object checks), so no memo of an earlier load is warm;
- no-op edit: one file rewritten with a trailing comment (its content changed, no resource changed), then
  `load()` on the store that loaded the directory before;
- one-line edit: then one VirtualService's timeout changed in that file, and `load()`;
- for scale, PyYAML alone: `yaml.load_all` with libyaml's CSafeLoader over the same files' text (no
  positions, no validation): the floor any loader built on PyYAML starts from.

Each figure is the median of `--repeat` runs (a fresh directory per startup run, so no OS-level cache
difference between runs). The gc is left enabled and configured as `controlplane serve` configures it
(gcpolicy.configure_for_serving).

    .venv/bin/python bench/policy_load.py                     # N = 1,000 and 5,000, 5 repeats
    .venv/bin/python bench/policy_load.py --services 1000 --repeat 3 --no-write
    .venv/bin/python bench/policy_load.py --services 1000 --profile noop   # cProfile of the no-op reload
    .venv/bin/python bench/policy_load.py --baseline /work/main   # main's figures too, in the same run

Results: bench/results/policy_load.md.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import functools
import io
import json
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mesh_policy
import yaml
from machine import describe_machine

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def service_yaml(index: int, timeout: str = "5s", comment: str = "") -> str:
    return mesh_policy.service_yaml(index, timeout=timeout, retries=True,
                                    traffic_policy=mesh_policy.POOL_AND_OUTLIER, comment=comment)


def write_policy(directory: Path, services: int) -> None:
    mesh_policy.write_policy(directory, services, service_yaml)


def cpu(action: Callable[[], object]) -> float:
    started = time.process_time()
    action()
    return time.process_time() - started


def measure(services: int, repeat: int, profile: str | None) -> dict[str, float]:
    from controlplane import gcpolicy  # from the repository on sys.path (see main)
    from controlplane.policystore import PolicyStore

    gcpolicy.configure_for_serving()  # the collector as `controlplane serve` sets it (cli.py)

    startup: list[float] = []
    pyyaml: list[float] = []
    noop: list[float] = []
    edit: list[float] = []
    for run in range(repeat):
        with tempfile.TemporaryDirectory(prefix="policy-load-") as temp:
            root = Path(temp)
            write_policy(root, services)
            store = PolicyStore(root)
            if profile == "startup" and run == 0:
                _profile(PolicyStore(root).load)
            # a startup is a fresh process's first load (no memo of an earlier load warm), in a subprocess
            startup.append(startup_in_fresh_process(Path(sys.path[0]), root))
            store.load()
            texts = [path.read_text() for path in sorted(root.glob("*.yaml"))]
            pyyaml.append(cpu(functools.partial(_pyyaml_alone, texts)))
            index = services // 2
            target = root / f"svc-{index:05d}.yaml"
            timeout = "5s"  # the target's timeout as loaded: a no-op edit keeps it
            for step in range(3):
                target.write_text(service_yaml(index, timeout, comment=f"# touched {run}.{step}\n"))
                if profile == "noop" and run == 0 and step == 0:
                    _profile(store.load)
                else:
                    noop.append(cpu(store.load))
                timeout = f"{6 + step}s"
                target.write_text(service_yaml(index, timeout))
                if profile == "edit" and run == 0 and step == 0:
                    _profile(store.load)
                else:
                    edit.append(cpu(store.load))
                result = store.load()
                assert not [d for d in result.diagnostics if d.is_error], result.diagnostics[:3]
            shutil.rmtree(root, ignore_errors=True)
    return {
        "startup": statistics.median(startup),
        "pyyaml": statistics.median(pyyaml),
        "noop": statistics.median(noop),
        "edit": statistics.median(edit),
    }


def _pyyaml_alone(texts: list[str]) -> None:
    for text in texts:
        list(yaml.load_all(text, Loader=yaml.CSafeLoader))


def _profile(action: Callable[[], object]) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(action)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
    print(out.getvalue())


STARTUP = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from controlplane import gcpolicy
from controlplane.policystore import PolicyStore
gcpolicy.configure_for_serving()
store = PolicyStore(Path(sys.argv[2]))
started = time.process_time()
store.load()
print(time.process_time() - started)
"""


def startup_in_fresh_process(repo: Path, policy: Path) -> float:
    """CPU of a new process's first `PolicyStore.load()` of `policy`, with `repo`'s controlplane."""
    out = subprocess.run([sys.executable, "-c", STARTUP, str(repo), str(policy)], check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def in_subprocess(repo: Path, services: int, repeat: int) -> dict[str, float]:
    """`measure` with another checkout's controlplane (for a ratio against it in the same run)."""
    out = subprocess.run([sys.executable, __file__, "--worker", str(repo), "--services", str(services),
                          "--repeat", str(repeat)], check=True, capture_output=True, text=True).stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, nargs="+", default=[1_000, 5_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", choices=("startup", "noop", "edit"))
    parser.add_argument("--baseline", type=Path, help="also measure this checkout (e.g. /work/main)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print only; do not update bench/results")
    args = parser.parse_args()
    sys.path.insert(0, str(args.worker or HERE.parent))
    if args.worker:
        print(json.dumps(measure(args.services[0], args.repeat, None)))
        return
    machine = describe_machine(["pyyaml", "pydantic"])
    rows: list[tuple[str, int, dict[str, Any]]] = []
    for services in args.services:
        if args.baseline:
            base = in_subprocess(args.baseline, services, args.repeat)
            rows.append((f"baseline ({args.baseline})", services, base))
            print(f"baseline N={services}: {base}", flush=True)
        figures = measure(services, args.repeat, args.profile)
        rows.append(("this tree", services, figures))
        print(f"N={services}: startup {figures['startup']:.3f} s (PyYAML alone {figures['pyyaml']:.3f} s), "
              f"no-op edit {figures['noop'] * 1000:.1f} ms, "
              f"one-line edit {figures['edit'] * 1000:.1f} ms", flush=True)
    table = [
        "| code | N services (objects) | startup CPU | PyYAML alone, same files | no-op one-file edit CPU "
        "| one-line edit CPU |",
        "|---|---|---|---|---|---|",
    ]
    for code, services, figures in rows:
        floor = f"{figures['pyyaml']:.3f} s" if "pyyaml" in figures else "—"
        table.append(f"| {code} | {services:,} ({3 * services:,}) | {figures['startup']:.3f} s | {floor} | "
                     f"{figures['noop'] * 1000:.1f} ms | {figures['edit'] * 1000:.1f} ms |")
    print("\n".join(table))
    if args.no_write:
        return
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = [
        "# Policy load CPU (bench/policy_load.py)",
        "",
        f"Run {stamp}, medians of {args.repeat} runs (no-op and one-line edits: 3 per run); "
        "`time.process_time`, gc enabled as `serve` sets it. Each N: one file per service with a "
        "ServiceEntry (2 endpoints), a VirtualService (retries, timeout) and a DestinationRule (pool, "
        "outlier detection).",
        "",
        *table,
        "",
        "Machine (shared by several engineers: compare rows of one run as ratios):",
        "",
        *(f"- {key}: {value}" for key, value in machine.items()),
        "",
    ]
    (RESULTS / "policy_load.md").write_text("\n".join(text))


if __name__ == "__main__":
    main()
