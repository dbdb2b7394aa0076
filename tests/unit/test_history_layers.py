"""The change log's resource diff on assembled snapshots (shared layers + own overlays) equals a plain
name-by-name diff of every resource, also when names move between a layer and an overlay; and the
async variant records the same change."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from controlplane.api.policyset import PolicySet
from controlplane.model.identity import ProxyIdentity
from controlplane.ops.console.history import ChangeLog
from controlplane.policystore import LoadResult
from controlplane.translate.resources import CLUSTER, PUSH_ORDER, SHORT_NAMES
from controlplane.xds.layers import Layer, Layered
from controlplane.xds.snapshot import Interner, Resource, Snapshot
from controlplane.xds.status import StatusRegistry

INTERNER = Interner()


def _clusters(**timeouts: int) -> dict[str, Resource]:
    out = {}
    for name, seconds in timeouts.items():
        cluster = cluster_pb2.Cluster(name=name)
        cluster.connect_timeout.seconds = seconds
        out[name] = INTERNER.resource(CLUSTER, name, cluster)
    return out


def _snapshot(shared: Layer | None, own: Mapping[str, Resource]) -> Snapshot:
    resources: dict[str, Mapping[str, Resource]] = {t: Layered(None, {}) for t in PUSH_ORDER}
    resources[CLUSTER] = Layered(shared, own)
    version = "-".join(f"{n}={r.version}" for n, r in sorted(resources[CLUSTER].items()))
    return Snapshot(resources, version, {}, {})


def _plain_diff(pairs: list[tuple[Snapshot, Snapshot]]) -> dict[str, dict[str, list[str]]]:
    """The reference: every resource of every changed shape compared by name and version."""
    out: dict[str, dict[str, set[str]]] = {}
    for old, new in pairs:
        for type_url in PUSH_ORDER:
            before = {n: r.version for n, r in old.of_type(type_url).items()}
            after = {n: r.version for n, r in new.of_type(type_url).items()}
            empty: dict[str, set[str]] = {"added": set(), "changed": set(), "removed": set()}
            kinds = out.setdefault(SHORT_NAMES[type_url], empty)
            kinds["added"] |= set(after) - set(before)
            kinds["removed"] |= set(before) - set(after)
            kinds["changed"] |= {n for n in set(after) & set(before) if after[n] != before[n]}
    return {t: {k: sorted(v) for k, v in kinds.items()} for t, kinds in out.items() if any(kinds.values())}


class _Cache:
    def __init__(self, shapes: dict[ProxyIdentity, Snapshot]) -> None:
        self._shapes = shapes

    def shapes(self) -> dict[ProxyIdentity, tuple[Snapshot, int]]:
        return {identity: (snapshot, 1) for identity, snapshot in self._shapes.items()}


def _case() -> tuple[dict[ProxyIdentity, Snapshot], dict[ProxyIdentity, Snapshot]]:
    old_layer = Layer(_clusters(a=1, b=1, c=1, moved=1))
    new_layer = Layer(_clusters(a=2, b=1, d=1))  # a changed, c removed, d added, `moved` went own
    web, api, db, same = (ProxyIdentity(service_account=n) for n in ("web", "api", "db", "same"))
    before = {
        web: _snapshot(old_layer, _clusters(own_web=1)),
        api: _snapshot(old_layer, _clusters(own_api=1, gone=1)),
        db: _snapshot(old_layer, {}),
        same: _snapshot(new_layer, _clusters(own_same=1)),
    }
    after = {
        web: _snapshot(new_layer, _clusters(own_web=5)),
        api: _snapshot(new_layer, _clusters(own_api=1)),
        db: _snapshot(new_layer, _clusters(moved=1)),  # same version, now in the overlay
        same: _snapshot(new_layer, _clusters(own_same=2)),  # same layer, own change only
    }
    return before, after


@pytest.mark.asyncio
async def test_layered_diff_equals_the_plain_diff() -> None:
    before, after = _case()
    log = ChangeLog()
    loaded = LoadResult(PolicySet(), [])
    args: tuple[Any, ...] = (_Cache(after), StatusRegistry(), before, [("f.yaml", 1, 1)], loaded)
    change = await log.after(*args)
    expected = _plain_diff([(before[i], after[i]) for i in after])
    assert change.resources == expected
    # web and api lost `moved` (it left the layer); db has it at the same version, from its overlay
    assert expected["clusters"] == {"added": ["d"], "changed": ["a", "own_same", "own_web"],
                                    "removed": ["c", "gone", "moved"]}
    assert len(change.shapes) == 4
