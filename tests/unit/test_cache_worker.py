"""SnapshotCache off the event loop: `prepare` builds a new shape in the worker thread (once for proxies
of one shape connecting together, again if a new policy is published meanwhile), `watch` then uses it
without building; `publish` builds in the worker and gives the versions `set_factory` gives."""

from __future__ import annotations

import asyncio
import threading

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from controlplane.model.identity import ProxyIdentity
from controlplane.translate.resources import CLUSTER, Resources
from controlplane.xds.cache import SnapshotCache


class Factory:
    """Resources with one cluster whose connect timeout is `seconds`; records where it ran."""

    def __init__(self, seconds: int = 1, gate: threading.Event | None = None) -> None:
        self.seconds = seconds
        self.threads: list[str] = []
        self.gate = gate

    def __call__(self, identity: ProxyIdentity) -> Resources:
        if self.gate is not None:
            self.gate.wait(5)
        self.threads.append(threading.current_thread().name)
        resources = Resources()
        cluster = cluster_pb2.Cluster(name=f"c-{identity.service_account}")
        cluster.connect_timeout.seconds = self.seconds
        resources.add(CLUSTER, cluster.name, cluster)
        return resources


def _identity(account: str) -> ProxyIdentity:
    return ProxyIdentity(service_account=account)


@pytest.mark.asyncio
async def test_prepare_builds_in_the_worker_and_watch_does_not_build_again() -> None:
    factory = Factory()
    cache = SnapshotCache(factory)
    web = _identity("web")
    await asyncio.gather(cache.prepare(web), cache.prepare(web))  # two proxies of one shape
    watch = cache.watch(web)
    assert factory.threads == ["snapshot-build_0"]
    assert threading.current_thread().name not in factory.threads
    assert "c-web" in watch.snapshot.of_type(CLUSTER)
    watch.cancel()


@pytest.mark.asyncio
async def test_a_publish_during_prepare_builds_the_shape_from_the_new_policy() -> None:
    gate = threading.Event()
    old = Factory(1, gate)
    cache = SnapshotCache(old)
    web = _identity("web")
    preparing = asyncio.ensure_future(cache.prepare(web))
    await asyncio.sleep(0.05)  # the worker is building from the old factory
    publishing = asyncio.ensure_future(cache.publish(Factory(2)))
    gate.set()
    await asyncio.gather(preparing, publishing)
    watch = cache.watch(web)
    assert watch.snapshot.of_type(CLUSTER)["c-web"].message.connect_timeout.seconds == 2
    watch.cancel()


@pytest.mark.asyncio
async def test_publish_in_the_worker_gives_the_versions_of_set_factory() -> None:
    identities = [_identity(f"sa-{i}") for i in range(20)]
    threaded, inline = SnapshotCache(Factory(1)), SnapshotCache(Factory(1))
    watches = [cache.watch(i) for cache in (threaded, inline) for i in identities]
    newer = Factory(3)
    changed = await threaded.publish(newer)
    assert changed == inline.set_factory(Factory(3)) == len(identities)
    assert set(newer.threads) == {"snapshot-build_0"}
    assert {i: s.version for i, (s, _) in threaded.shapes().items()} == \
        {i: s.version for i, (s, _) in inline.shapes().items()}
    assert await threaded.publish(Factory(3)) == 0  # same content, same versions: no push
    for watch in watches:
        watch.cancel()


@pytest.mark.asyncio
async def test_a_shape_whose_streams_left_during_publish_is_not_brought_back() -> None:
    cache = SnapshotCache(Factory(1))
    web = _identity("web")
    watch = cache.watch(web)
    gate = threading.Event()
    publishing = asyncio.ensure_future(cache.publish(Factory(2, gate)))
    await asyncio.sleep(0.05)  # the worker is building the shape's new snapshot
    watch.cancel()
    gate.set()
    assert await publishing == 0
    assert cache.shapes() == {}


@pytest.mark.asyncio
async def test_an_unwatched_prepared_snapshot_is_forgotten() -> None:
    factory = Factory()
    cache = SnapshotCache(factory)
    web = _identity("web")
    await cache.prepare(web)
    cache.forget_prepared(web)
    cache.watch(web).cancel()
    assert len(factory.threads) == 2  # built again, on the loop this time
    assert factory.threads[1] == threading.current_thread().name


@pytest.mark.asyncio
async def test_a_build_nobody_waits_for_any_more_is_not_kept() -> None:
    gate = threading.Event()
    cache = SnapshotCache(Factory(1, gate))
    web = _identity("web")
    preparing = asyncio.ensure_future(cache.prepare(web))
    await asyncio.sleep(0.05)
    preparing.cancel()  # the stream went away while its snapshot was being built
    gate.set()
    await asyncio.sleep(0.2)
    assert cache._building == {}
