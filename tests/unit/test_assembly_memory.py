"""A proxy that reconnects with unique random labels every time does not grow the server's memory: its
shapes are freed with their last stream, and the policy-wide memos stay bounded (model/policywide.py)."""

from __future__ import annotations

import gc
import random

import pytest

from controlplane.app import make_factory
from controlplane.model import carry, policywide
from controlplane.model.identity import ProxyIdentity, SocketAddress
from controlplane.translate.resources import CLUSTER
from controlplane.xds import assembly
from controlplane.xds.cache import SnapshotCache
from tests.reliability.policy_support import demo_texts, load


def test_unique_labels_on_every_reconnect_do_not_grow_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policywide, "MAX_ENTRIES", 64)  # the clearing is what is under test
    monkeypatch.setattr(assembly, "MAX_SMALL_PARTS", 16)
    policy, _ = load(demo_texts())
    cache = SnapshotCache(make_factory(policy))
    rng = random.Random(12)

    def reconnect() -> None:
        # `app` is read by selectors and telemetry: a random value makes every shape distinct
        labels = (("app", f"a{rng.getrandbits(64):x}"), ("pod", f"p{rng.getrandbits(64):x}"))
        watch = cache.watch(ProxyIdentity(labels=labels, inbound_address=SocketAddress("127.0.0.1", 15006),
                                          app_ports=(9101,)))
        assert len(watch.snapshot.of_type(CLUSTER)) > 5
        watch.cancel()

    for _ in range(50):
        reconnect()
    gc.collect()
    interned = len(cache.interner)
    for _ in range(300):
        reconnect()
    gc.collect()
    assert cache.shapes() == {}
    # the resources of departed shapes are gone; what stays is the policy-wide part and at most
    # MAX_SMALL_PARTS outbound listeners (+ passthrough) remembered for the next shape
    assert len(cache.interner) <= interned + 2 * 16
    # the policy-wide memos are bounded too
    wide = policywide.PolicyWide(policy)
    for _ in range(300):
        wide.model(ProxyIdentity(labels=(("app", f"a{rng.getrandbits(64):x}"),)))
    assert 0 < wide._memo._entries <= 64


def test_a_new_locality_on_every_reconnect_keeps_the_carried_clusters_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The clusters depend on the proxy's locality (locality load balancing), so each new locality makes
    every service's clusters anew; model/carry.py keeps at most MAX_CLUSTER_RESULTS of them."""
    monkeypatch.setattr(carry, "MAX_CLUSTER_RESULTS", 200)
    policy, _ = load(demo_texts())
    wide = policywide.PolicyWide(policy)
    rng = random.Random(7)
    sizes = []
    for _ in range(100):
        wide.model(ProxyIdentity(locality=f"r{rng.getrandbits(32):x}/z/s"))
        sizes.append(len(wide.carry._tables["clusters"]))
    assert max(sizes) <= 200
    assert sizes[0] > 0 and len(set(sizes)) > 1  # it grew with new localities, and was cleared
