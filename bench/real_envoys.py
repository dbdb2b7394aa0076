"""50 real Envoy sidecars with distinct identities at N = 1,000 services converge after an edit.

Each Envoy has its own labels, inbound address, app port and service account (so its own proxy shape);
the policy and the notion of "converged" are tests/e2e/fleet.py's (the in-suite version,
tests/e2e/test_fleet.py, runs 8 Envoys at N = 200). It starts `controlplane serve --insecure-xds`
(tests/e2e/mesh.py's ControlPlane, free ports, a temp dir), starts the Envoys one after the other,
waits until every one runs what the server serves its node with no cluster warming, makes a one-line
edit (a route timeout) and measures edit → every Envoy converged (seen synced on the server's /debug/syncz,
polled every 50 ms, then confirmed against the Envoy's own config dump; the server's receipt of each
Envoy's last ACK after the edit is reported too, free of the polling), then checks
`cluster_manager.warming_clusters` is 0 on all of them. Every process is stopped by PID.

    .venv/bin/python bench/real_envoys.py                     # 50 Envoys, N = 1,000
    .venv/bin/python bench/real_envoys.py --envoys 10 --services 200
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import describe_machine  # noqa: E402

from tests.e2e.fleet import DistinctSidecar, converged, edit_timeout, write_services  # noqa: E402
from tests.e2e.mesh import ControlPlane  # noqa: E402
from tests.harness import ProcessGroup, find_envoy  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--envoys", type=int, default=50)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per phase")
    parser.add_argument("--write", action="store_true", help="record bench/results/real_envoys.json")
    args = parser.parse_args(argv)
    binary = find_envoy()
    if binary is None:
        raise SystemExit("no envoy binary (set $ENVOY_BIN or put envoy on PATH)")
    with tempfile.TemporaryDirectory(prefix="cp-real-envoys-") as temp:
        work = Path(temp)
        group = ProcessGroup(work / "logs")
        try:
            config = work / "policy"
            write_services(config, args.services)
            control_plane = ControlPlane(group, config)
            control_plane.start(timeout=args.timeout)
            envoys = [
                DistinctSidecar(
                    binary, group, work / "envoys", f"real-{i:03d}", control_plane.xds_address, index=i
                )
                for i in range(args.envoys)
            ]
            started = time.monotonic()
            for envoy in envoys:
                envoy.start(timeout=args.timeout)
            pending: dict[str, float] = {}

            def versions() -> dict[str, str]:
                return {row["node"]: row["current_snapshot_version"] for row in control_plane.syncz()}

            def acked(since_wall: float) -> dict[str, float]:
                """Per node: seconds from `since_wall` to the server's receipt of its last ACK after it."""
                out: dict[str, float] = {}
                for row in control_plane.syncz():
                    times = [t["acked_at"] for t in row["types"].values()
                             if t.get("acked_at") and t["acked_at"] >= since_wall]
                    if times:
                        out[row["node"]] = max(times) - since_wall
                return out

            def wait_all(timeout_s: int, since: float, stale: dict[str, str]) -> dict[str, float]:
                """Seconds from `since` until each Envoy was seen synced on /debug/syncz (one call per
                round for all of them) with a snapshot other than `stale`'s, confirmed once by the full
                check (`converged`: Envoy's config dump equals what the server serves its node, the
                edited route, nothing warming). Comparing two config dumps of 2,000 resources per Envoy
                and round measured the poller, not the convergence (p50 75 s for 50 Envoys)."""
                done: dict[str, float] = {}
                by_node = {envoy.node_id: envoy for envoy in envoys}
                deadline = time.monotonic() + args.timeout
                while len(done) < len(envoys) and time.monotonic() < deadline:
                    seen = time.monotonic() - since
                    for row in control_plane.syncz():
                        node = row["node"]
                        if node in done or node not in by_node or not row["synced"] \
                                or row["current_snapshot_version"] == stale.get(node):
                            continue
                        if converged(control_plane, by_node[node], timeout_s):
                            done[node] = seen
                    time.sleep(0.05)
                return done

            initial = wait_all(5, started, {})
            before = versions()
            edited, edited_wall = time.monotonic(), time.time()
            edit_timeout(config, 7)
            pending = wait_all(7, edited, before)
            acks = acked(edited_wall)
            warming = {e.node_id: e.warming()["cluster_manager.warming_clusters"] for e in envoys}
            report = {
                "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "machine": describe_machine(("grpcio", "protobuf")),
                "envoys": args.envoys,
                "services": args.services,
                "start_all_converged_s": max(initial.values(), default=None),
                "initially_converged": len(initial),
                "edit_converged": len(pending),
                "edit_p50_s": statistics.median(pending.values()) if pending else None,
                "edit_max_s": max(pending.values(), default=None),
                # the server's receipt of each Envoy's last ACK after the edit (not bounded by polling)
                "edit_acked_p50_s": statistics.median(acks.values()) if acks else None,
                "edit_acked_max_s": max(acks.values(), default=None),
                "edit_acked": len(acks),
                "warming_clusters_nonzero": {n: w for n, w in warming.items() if w != 0},
            }
        finally:
            group.stop_all()
    ok = report["edit_converged"] == args.envoys and not report["warming_clusters_nonzero"]
    report["ok"] = ok
    print(json.dumps(report, indent=2))
    if args.write:
        (ROOT / "bench" / "results" / "real_envoys.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
