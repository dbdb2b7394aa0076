"""Distinct real sidecars converge after an edit: 8 Envoys, each its own identity (labels, inbound address,
service account, so each its own proxy shape), at N = 200 services. After a one-line edit every Envoy
runs what the server serves its node, its route carries the new timeout, and no cluster stays warming.
The 50-Envoy, N = 1,000 version of this is bench/real_envoys.py (too heavy for the suite).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.fleet import DistinctSidecar, converged, edit_timeout, write_services
from tests.e2e.mesh import ControlPlane
from tests.harness import ProcessGroup, wait_until

SERVICES = 200
SIDECARS = 8


def test_distinct_sidecars_converge_after_an_edit(
    tmp_path: Path, processes: ProcessGroup, envoy_binary: str
) -> None:
    config = tmp_path / "policy"
    write_services(config, SERVICES)
    control_plane = ControlPlane(processes, config)
    control_plane.start(timeout=60)
    envoys = [
        DistinctSidecar(
            envoy_binary, processes, tmp_path / "envoys", f"fleet-{i}", control_plane.xds_address, index=i
        )
        for i in range(SIDECARS)
    ]
    # started together: Envoy's own startup overlaps, the server still sees 8 distinct proxies connect
    with ThreadPoolExecutor(SIDECARS) as pool:
        list(pool.map(lambda envoy: envoy.start(timeout=60), envoys))

    def all_converged(timeout_s: int) -> bool:
        return all(converged(control_plane, envoy, timeout_s) for envoy in envoys)

    wait_until(lambda: all_converged(5), timeout=60, what="every sidecar to run its initial config")
    # distinct identities really are distinct proxies: each inbound listener is its own (content version)
    inbound = [envoy.dynamic()["listeners"].get("inbound_http") for envoy in envoys]
    assert None not in inbound and len(set(inbound)) == SIDECARS, inbound
    clusters = [len(envoy.dynamic()["clusters"]) for envoy in envoys]
    assert min(clusters) >= SERVICES, clusters

    edited = time.monotonic()
    edit_timeout(config, 7)
    wait_until(lambda: all_converged(7), timeout=60, what="every sidecar to run the edited route")
    elapsed = time.monotonic() - edited
    for envoy in envoys:
        assert envoy.warming() == {
            "cluster_manager.warming_clusters": 0,
            "listener_manager.total_listeners_warming": 0,
        }, envoy.node_id
    assert elapsed < 60
