"""Benchmark: what one proxy shape costs at N services, against the bare serialization of its resources.

Policy: bench/scale.py's (per service a ServiceEntry with 2 endpoints, a VirtualService with retries and
a timeout, a DestinationRule with pool and outlier detection), N = 1,000 by default. Measured in a worker
process per (checkout, GC mode), CPU seconds (time.process_time), medians over the repeats:

- *reference*: one shape from scratch, `build_proxy` → `translate_proxy` → `Snapshot.build` (fresh
  Interner), the full-rebuild path the tests compare against;
- *bare*: `SerializeToString()` of every resource of that snapshot (the protobuf floor);
- *ratio* = reference ÷ bare (issue #12's target: ≤ 10x);
- *first shape*: the server's path for the first shape of a policy generation (a fresh PolicyWide and
  SharedTranslation, `make_factory` → `SnapshotCache.watch`);
- *first shape after an edit*: the first shape of the next generation after bench/scale.py's one-line
  VirtualService edit, read through the policy store, its PolicyWide and SharedTranslation handed the
  previous ones (as ControlPlane._reload does); the median of 5 successive edits per worker;
- *per additional shape*: the same path for each of K more sidecars with distinct labels, inbound
  address, app port and service account (as `ads_load_client.py --distinct-identity`), without the
  mesh CA's certificates (security/, measured apart: `--with-certs`).

GC modes: `default`; `frozen` (`gc.collect(); gc.freeze()` after the load, so the long-lived policy
objects are not rescanned by every full collection); `tuned` (frozen, and the youngest generation
collected every 20,000 allocations instead of 700: a build allocates ~10^5 objects, nearly none cyclic).
`--root LABEL=DIR` (repeatable) measures other checkouts in the same run (their `controlplane` package
on PYTHONPATH), interleaved, so before/after compare as ratios on the same, shared machine.

    .venv/bin/python bench/shape_cost.py --root before=/work/main --root after=.
    .venv/bin/python bench/shape_cost.py --reps 1 --no-write      # a quick look

Results: bench/results/shape_cost.{md,json}, with the machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from machine import describe_machine

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
PREFIX = "SHAPE_COST "
MODES = ("default", "frozen", "tuned")
TUNED_THRESHOLD = (20_000, 10, 10)  # gen0 every 20,000 net allocations instead of 700
EDITS = 5  # one-line edits per worker for the "first shape after an edit" column (their median)


# ---------------------------------------------------------------------------------------------------------
# the worker (runs with the measured checkout's controlplane on sys.path)


def _cpu(started: float) -> float:
    return time.process_time() - started


def measure_reference(policy: Any, repeat: int) -> dict[str, list[float]]:
    from controlplane.model import build_proxy
    from controlplane.model.identity import ProxyIdentity
    from controlplane.translate.translator import translate_proxy
    from controlplane.xds.snapshot import Interner, Snapshot

    rows: dict[str, list[float]] = {"build": [], "translate": [], "snapshot": [], "bare": []}
    for _ in range(repeat):
        started = time.process_time()
        model = build_proxy(policy, ProxyIdentity())
        rows["build"].append(_cpu(started))
        started = time.process_time()
        resources = translate_proxy(model)
        rows["translate"].append(_cpu(started))
        started = time.process_time()
        Snapshot.build(resources, Interner())
        rows["snapshot"].append(_cpu(started))
        messages = [message for by_name in resources.by_type.values() for message in by_name.values()]
        started = time.process_time()
        for message in messages:
            message.SerializeToString()
        rows["bare"].append(_cpu(started))
        del model, resources, messages
    return rows


def measure_shapes(policy: Any, shapes: int, work: Path, certs: bool, policy_dir: Path) -> dict[str, Any]:
    from controlplane.app import make_factory
    from controlplane.xds.cache import SnapshotCache
    from controlplane.xds.node import identity_of

    sys.path.insert(0, str(BENCH))
    from ads_load_client import node_of

    mesh = None
    if certs:
        from datetime import timedelta

        from controlplane.security.runtime import load_mesh_identity

        mesh = load_mesh_identity(work / "ca", timedelta(hours=1)).identity
    cache = SnapshotCache(make_factory(policy, mesh_identity=mesh))
    identities = [identity_of(node_of(index, False, "shape", True)) for index in range(shapes + 1)]
    started = time.process_time()
    watches = [cache.watch(identities[0])]
    first = _cpu(started)
    each = []
    for identity in identities[1:]:
        started = time.process_time()
        watches.append(cache.watch(identity))
        each.append(_cpu(started))
    resources = sum(len(watches[-1].snapshot.of_type(t)) for t in watches[-1].snapshot.resources)
    for watch in watches[1:]:
        watch.cancel()
    after_edit = _first_after_edit(cache, mesh, work, policy_dir)
    watches[0].cancel()
    return {"first_s": first, "each_s": each, "resources_per_shape": resources, "after_edit_s": after_edit}


def _first_after_edit(cache: Any, mesh: Any, work: Path, policy_dir: Path) -> float | None:
    """The first shape of the generation after a one-line edit (bench/scale.py's VirtualService timeout),
    loaded through the policy store (unchanged objects keep their instances) and handed the previous
    generation's PolicyWide (when the checkout takes one) and translation, as the server's reload does;
    None for a checkout whose SharedTranslation takes no previous generation."""
    import inspect
    import shutil

    from scale import edit_policy

    from controlplane.app import make_factory
    from controlplane.model.policywide import PolicyWide
    from controlplane.policystore import PolicyStore
    from controlplane.xds.assembly import SharedTranslation

    before = SharedTranslation()
    try:
        SharedTranslation(before)  # type: ignore[call-arg]  # an older checkout takes no previous one
    except TypeError:
        return None
    lends = "previous" in inspect.signature(PolicyWide).parameters
    # Both generations are read from one directory (origins name the files, so a copy elsewhere would
    # differ in every object), and the live shape's parts must come from `before`: rebuild it first.
    edited_dir = work / f"edited-{os.getpid()}"
    shutil.copytree(policy_dir, edited_dir)
    store = PolicyStore(edited_dir)
    base = store.load().policy
    wide = PolicyWide(base)
    cache.set_factory(make_factory(base, mesh_identity=mesh, stage=(wide, before)))
    times = []
    for edit in range(EDITS):
        edit_policy(edited_dir, 6 + edit % 2)
        edited = store.load().policy
        wide = PolicyWide(edited, wide) if lends else PolicyWide(edited)  # type: ignore[call-arg]
        before = SharedTranslation(before)  # type: ignore[call-arg]
        factory = make_factory(edited, mesh_identity=mesh, stage=(wide, before))
        started = time.process_time()
        cache.set_factory(factory)  # one live shape: the generation's first
        times.append(_cpu(started))
    return statistics.median(times)


def worker(policy_dir: Path, mode: str, repeat: int, shapes: int, certs: bool, work: Path) -> dict[str, Any]:
    from controlplane.api.loader import load_policy_dir

    policy, diagnostics = load_policy_dir(policy_dir)
    if any(d.is_error for d in diagnostics):
        raise RuntimeError(f"policy has problems, first: {diagnostics[0]}")
    if mode in ("frozen", "tuned"):
        gc.collect()
        gc.freeze()  # the policy objects live as long as their generation: out of every collection's scan
    if mode == "tuned":
        gc.set_threshold(*TUNED_THRESHOLD)  # a build makes ~10^5 objects, nearly none in cycles
    collections = [0.0]
    gc_started = [0.0]

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.process_time()
        else:
            collections[0] += time.process_time() - gc_started[0]

    gc.callbacks.append(on_gc)
    reference = measure_reference(policy, repeat)
    reference_gc = collections[0] / repeat
    shape = measure_shapes(policy, shapes, work, certs, policy_dir)
    import controlplane

    return {"reference": reference, "reference_gc_s": reference_gc, "package": controlplane.__file__, **shape}


# ---------------------------------------------------------------------------------------------------------
# orchestration


def run_worker(root: Path, policy: Path, mode: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "--policy-dir", str(policy),
            "--mode", mode, "--repeat", str(args.repeat), "--shapes", str(args.shapes), "--work", str(work)]
    if args.with_certs:
        argv.append("--with-certs")
    env = {**os.environ, "PYTHONPATH": str(root.resolve())}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=args.timeout, check=False)
    line = next((line for line in done.stdout.splitlines() if line.startswith(PREFIX)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"worker for {root} ({mode}) failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(line[len(PREFIX):])
    return result


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    stages = {stage: median([v for run in runs for v in run["reference"][stage]])
              for stage in ("build", "translate", "snapshot", "bare")}
    reference = stages["build"] + stages["translate"] + stages["snapshot"]
    each = sorted(v for run in runs for v in run["each_s"])
    return {
        **{f"{stage}_s": value for stage, value in stages.items()},
        "reference_s": reference,
        "ratio": reference / stages["bare"],
        "reference_gc_s": median([run["reference_gc_s"] for run in runs]),
        "first_shape_s": median([run["first_s"] for run in runs]),
        "per_shape_s": median(each),
        "per_shape_p90_s": each[int(len(each) * 0.9)],
        "after_edit_s": median(edits) if (edits := [r["after_edit_s"] for r in runs
                                                     if r.get("after_edit_s") is not None]) else None,
        "workers": len(runs),
    }


def render(report: dict[str, Any]) -> str:
    out = [
        "# Cost of one proxy shape (bench/shape_cost.py)",
        "",
        "CPU ms (process_time), medians over the repeats. *reference*: build_proxy + translate_proxy + "
        "Snapshot.build of one shape from scratch; *bare*: SerializeToString of each of its resources; "
        "*ratio* = reference ÷ bare (target ≤ 10x). *first shape*: the server's assembly path "
        "(make_factory → SnapshotCache.watch) for a generation's first shape; *per shape*: each further "
        "sidecar with a distinct identity (labels, inbound address, service account), with workload "
        "certificates where the heading says so; *first shape after an edit*: the same after a one-line "
        "VirtualService edit, the previous generation's translation handed over (as a reload does). "
        "GC *frozen*: "
        "gc.collect() + gc.freeze() after the load; *tuned*: frozen and gc.set_threshold(20000, 10, 10). "
        "*gc*: CPU in collections during one reference build.",
        "",
    ]
    for run in report["runs"]:
        m = run["machine"]
        out += [
            f"## {run['date']}, N = {run['services']:,}, {run['shapes']} additional shapes"
            f"{' with certificates' if run.get('with_certs') else ''}, "
            f"{run['repeat']} x {run['reps']} reference builds per row",
            "",
            f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gb']} GB, {m['python']}, "
            f"load at start {run['load']}.",
            "",
            "| checkout | GC | build | translate | Snapshot.build | reference | bare | ratio "
            "| gc in reference | first shape | per shape (p90) | first shape after an edit (÷ bare) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in run["rows"]:
            s = row["summary"]
            out.append(
                f"| {row['label']} | {row['mode']} | {s['build_s'] * 1e3:.1f} | {s['translate_s'] * 1e3:.1f} "
                f"| {s['snapshot_s'] * 1e3:.1f} | {s['reference_s'] * 1e3:.1f} | {s['bare_s'] * 1e3:.2f} "
                f"| **{s['ratio']:.1f}x** | {s['reference_gc_s'] * 1e3:.1f} | {s['first_shape_s'] * 1e3:.0f} "
                f"| {s['per_shape_s'] * 1e3:.2f} ({s['per_shape_p90_s'] * 1e3:.2f}) "
                f"| {_after_edit(s)} |"
            )
        out.append("")
    return "\n".join(out)


def _after_edit(summary: dict[str, Any]) -> str:
    after = summary.get("after_edit_s")
    return "n/a" if after is None else f"{after * 1e3:.0f} ({after / summary['bare_s']:.0f}x)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--shapes", type=int, default=200, help="additional distinct shapes per worker")
    parser.add_argument("--repeat", type=int, default=5, help="reference builds per worker")
    parser.add_argument("--reps", type=int, default=3, help="workers per (checkout, GC mode), interleaved")
    parser.add_argument("--root", action="append", default=[], help="LABEL=DIR of a checkout (repeatable)")
    parser.add_argument("--with-certs", action="store_true", help="per-shape cost with the mesh CA's certs")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--policy-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, default="default", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = worker(args.policy_dir, args.mode, args.repeat, args.shapes, args.with_certs, args.work)
        print(PREFIX + json.dumps(result), flush=True)
        return 0

    from scale import write_policy  # the N = 1,000 policy

    roots = [(label, Path(path)) for label, _, path in (r.partition("=") for r in args.root)] or [
        ("current", ROOT)]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {(label, mode): [] for label, _ in roots
                                                             for mode in MODES}
    load = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="shape-cost-") as temp:
        policy = Path(temp) / "policy"
        write_policy(policy, args.services)
        for rep in range(args.reps):
            for label, root in roots:
                for mode in MODES:
                    work = Path(temp) / f"{label}-{mode}-{rep}"
                    work.mkdir()
                    results[(label, mode)].append(run_worker(root, policy, mode, args, work))
                    s = summarize(results[(label, mode)][-1:])
                    print(f"{label} {mode} rep {rep}: reference {s['reference_s'] * 1e3:.0f} ms, ratio "
                          f"{s['ratio']:.1f}x, first shape {s['first_shape_s'] * 1e3:.0f} ms, per shape "
                          f"{s['per_shape_s'] * 1e3:.2f} ms", file=sys.stderr, flush=True)
    run = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": describe_machine(("protobuf", "xds-protos", "pydantic")),
        "load": load, "services": args.services, "shapes": args.shapes, "repeat": args.repeat,
        "with_certs": args.with_certs,
        "reps": args.reps,
        "rows": [{"label": label, "root": str(root), "mode": mode,
                  "summary": summarize(results[(label, mode)])} for label, root in roots for mode in MODES],
    }
    path = RESULTS / "shape_cost.json"
    report = json.loads(path.read_text()) if path.exists() else {"runs": []}
    report["runs"].append(run)
    if not args.no_write:
        path.write_text(json.dumps(report, indent=2) + "\n")
        path.with_suffix(".md").write_text(render(report))
    print(render({"runs": [run]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
