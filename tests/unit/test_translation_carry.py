"""Across policy generations, translated parts whose model value did not change are taken over
(xds/assembly.py, SharedTranslation(previous)): an edit of one route retranslates the route table only;
the clusters layer and a sidecar's own listeners stay the same objects, and the snapshot still equals the
full rebuild."""

from __future__ import annotations

import gc

from controlplane.api.policyset import PolicySet
from controlplane.app import make_factory
from controlplane.model.hashing import Hashed
from controlplane.model.policywide import PolicyWide
from controlplane.translate.resources import CLUSTER, LISTENER, ROUTE
from controlplane.translate.translator import own_inputs
from controlplane.xds.assembly import SharedTranslation
from controlplane.xds.cache import SnapshotCache, Watch
from controlplane.xds.layers import Layered
from controlplane.xds.snapshot import Interner, Snapshot
from tests.reliability.policy_support import IDENTITIES, demo_texts, load

SIDECAR = IDENTITIES[1]  # labelled, with an inbound listener


def _edited(texts: dict[str, str]) -> dict[str, str]:
    edited = dict(texts)
    assert "timeout: 30s" in edited["routes.yaml"]
    edited["routes.yaml"] = edited["routes.yaml"].replace("timeout: 30s", "timeout: 31s", 1)
    return edited


def _layer(snapshot: Snapshot, type_url: str) -> object:
    served = snapshot.of_type(type_url)
    assert isinstance(served, Layered)
    return served.shared


def _own(snapshot: Snapshot, type_url: str) -> dict[str, object]:
    served = snapshot.of_type(type_url)
    assert isinstance(served, Layered)
    return dict(served.own)


def _reference(policy: PolicySet, interner: Interner) -> Snapshot:
    from controlplane.model import build_proxy
    from controlplane.translate.translator import translate_proxy

    return Snapshot.build(translate_proxy(build_proxy(policy, SIDECAR)), interner)


def _served(policy: PolicySet, translation: SharedTranslation) -> tuple[SnapshotCache, Watch]:
    """A cache serving the labelled sidecar under `policy`, its parts from `translation`."""
    cache = SnapshotCache(make_factory(policy, stage=(PolicyWide(policy), translation)))
    return cache, cache.watch(SIDECAR)


def _reload(cache: SnapshotCache, policy: PolicySet, translation: SharedTranslation) -> None:
    cache.set_factory(make_factory(policy, stage=(PolicyWide(policy), translation)))


def test_an_edit_of_one_route_keeps_the_clusters_layer_and_the_own_listeners() -> None:
    texts = demo_texts()
    policy, _ = load(texts)
    first = SharedTranslation()
    cache, watch = _served(policy, first)
    before = watch.snapshot
    hash(own_inputs(PolicyWide(policy).model(SIDECAR)))  # raises if unhashable: then nothing would carry

    edited, _ = load(_edited(texts))
    _reload(cache, edited, SharedTranslation(first))
    after = watch.snapshot
    assert after.version != before.version
    assert _layer(after, CLUSTER) is _layer(before, CLUSTER)  # taken over: not translated again
    assert _layer(after, ROUTE) is not _layer(before, ROUTE)  # the edited route table is new
    own_before, own_after = _own(before, LISTENER), _own(after, LISTENER)
    assert own_after and all(own_after[name] is own_before[name] for name in own_after)
    reference = _reference(edited, cache.interner)
    for type_url in reference.resources:
        assert [(r.name, r.version) for r in after.of_type(type_url).values()] == \
            [(r.name, r.version) for r in reference.of_type(type_url).values()]
    assert after.version == reference.version


def test_without_the_previous_generation_everything_is_translated_again() -> None:
    """The control for the test above: a fresh translation shares nothing with the last one."""
    texts = demo_texts()
    policy, _ = load(texts)
    cache, watch = _served(policy, SharedTranslation())
    before = watch.snapshot
    edited, _ = load(_edited(texts))
    _reload(cache, edited, SharedTranslation())
    assert _layer(watch.snapshot, CLUSTER) is not _layer(before, CLUSTER)


def test_parts_of_departed_shapes_are_not_kept_for_the_next_generation() -> None:
    texts = demo_texts()
    policy, _ = load(texts)
    first = SharedTranslation()
    _, watch = _served(policy, first)
    own = Hashed(own_inputs(PolicyWide(policy).model(SIDECAR)))  # as the memo keys it
    assert own in first._by_value  # while the shape lives, the next generation can take it over
    watch.cancel()  # the shape leaves with its last stream
    gc.collect()
    assert own not in first._by_value  # held only by the departed snapshot: gone with it
