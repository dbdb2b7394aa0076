"""Re-checking edited VirtualServices (api/validate_incremental.py, used by the policy store for a one-route
edit) gives what validating the whole policy gives: the same objects, sources and diagnostics after random
route edits among routes that conflict (two VirtualServices for one host, a host named twice in one), that
point at missing hosts, subsets and gateways — and the re-check is what ran when the edit kept the route's
footprint."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

import controlplane.policystore as policystore
from controlplane.api import validate_incremental
from controlplane.policystore import LoadResult, PolicyStore

HOSTS = ["a.mesh.local", "b.mesh.local", "c.mesh.local"]


def _service(index: int, host: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: se{index}}}
spec:
  hosts: [{host}]
  ports: [{{number: 80, name: http, protocol: HTTP}}, {{number: 90, name: http2, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: dr{index}}}
spec:
  host: {host}
  subsets: [{{name: v1, labels: {{v: "1"}}}}]
"""


def _route(index: int, hosts: list[str], target: str, subset: str, timeout: int, gateways: str,
           mirror: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs{index}}}
spec:
  hosts: [{", ".join(hosts)}]{gateways}
  http:
  - name: main
    route: [{{destination: {{host: {target}, subset: {subset}, port: {{number: 80}}}}}}]
    timeout: {timeout}s{mirror}
"""


class _Route:
    """One route file's parameters: the timeout and the mirror change, the footprint stays."""

    def __init__(self, rng: random.Random, index: int) -> None:
        self.index = index
        self.hosts = rng.sample([*HOSTS, "missing.mesh.local", "a.mesh.local"], rng.randrange(1, 3))
        self.target = rng.choice([*HOSTS, "nowhere.mesh.local"])
        self.gateways = rng.choice(["", "\n  gateways: [mesh, no-such-gateway]", "\n  gateways: [mesh]"])
        self.rng = rng

    def text(self) -> str:
        rng = self.rng
        mirror = rng.choice(["", "\n    mirror: {host: nowhere.mesh.local}",
                             "\n    mirror: {host: b.mesh.local}"])
        return _route(self.index, self.hosts, rng.choice([self.target, HOSTS[0]]), rng.choice(["v1", "v2"]),
                      rng.randrange(1, 9), self.gateways, mirror)


def _summary(result: LoadResult) -> dict[str, Any]:
    return {
        "objects": {obj.key: obj for obj in result.policy},
        "order": list(result.policy.keys()),
        "sources": dict(result.policy.sources),
        "diagnostics": result.diagnostics,
        "kept": result.kept,
        "excluded": result.excluded,
    }


@pytest.mark.parametrize("seed", range(6))
def test_route_edits_rechecked_equal_full_validation(tmp_path: Path, seed: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    for index, host in enumerate(HOSTS):
        (tmp_path / f"s{index}.yaml").write_text(_service(index, host))
    routes = [_Route(rng, index) for index in range(6)]
    for route in routes:
        (tmp_path / f"r{route.index}.yaml").write_text(route.text())
    incremental, full = PolicyStore(tmp_path), PolicyStore(tmp_path, incremental=False)
    assert _summary(incremental.load()) == _summary(full.load())
    rechecks: list[object] = []
    recheck = validate_incremental.recheck_routes

    def counting(*args: Any) -> Any:
        outcome = recheck(*args)
        rechecks.append(outcome)
        return outcome

    monkeypatch.setattr(policystore, "recheck_routes", counting)
    for _ in range(25):
        edited = rng.sample(routes, rng.randrange(1, 3))
        for route in edited:
            (tmp_path / f"r{route.index}.yaml").write_text(route.text())
        before = len(rechecks)
        assert _summary(incremental.load()) == _summary(full.load())
        if len(rechecks) > before:
            assert rechecks[-1] is not None  # only the route's non-footprint fields changed
    assert any(outcome is not None for outcome in rechecks)


def test_a_footprint_change_is_validated_in_full(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(_service(0, HOSTS[0]) + "---\n" + _service(1, HOSTS[1]))
    (tmp_path / "r.yaml").write_text(_route(0, [HOSTS[0]], HOSTS[0], "v1", 1, "", ""))
    (tmp_path / "q.yaml").write_text(_route(1, [HOSTS[1]], HOSTS[1], "v1", 1, "", ""))
    incremental, full = PolicyStore(tmp_path), PolicyStore(tmp_path, incremental=False)
    assert _summary(incremental.load()) == _summary(full.load())
    # vs0 now claims b too, which vs1 (later in key order) claimed: vs1 loses it
    (tmp_path / "r.yaml").write_text(_route(0, [HOSTS[0], HOSTS[1]], HOSTS[0], "v1", 2, "", ""))
    result = incremental.load()
    assert _summary(result) == _summary(full.load())
    assert any("already routed by VirtualService default/vs0" in d.message for d in result.diagnostics)
