"""Wire abuse with the scripted ADS client: spoofed node ids, NACKs for versions never sent, unknown types,
empty nodes, 100k names, abandoned streams. The server stays up and a well-behaved client is served.

On main, a stranger NACKing under another proxy's node id left that proxy, reconnecting fresh, with 0
clusters (delta), and the NACK memory grew per node id without bound."""

from __future__ import annotations

import asyncio

import pytest
from ads_client import make_node, names, versions
from envoy.service.discovery.v3 import discovery_pb2
from envoy_config import clusters_only, static_cluster
from xds_harness import Harness, wait_until

from controlplane.translate.resources import CLUSTER, LISTENER
from controlplane.xds.nackmemory import NackMemory

pytestmark = pytest.mark.asyncio

CLUSTERS = clusters_only(static_cluster("a"), static_cluster("b"), static_cluster("c"))


async def served(xds: Harness, node_id: str = "healthy") -> None:
    client = xds.sotw(make_node(node_id))
    await client.request(CLUSTER)
    assert names(await client.recv_type(CLUSTER)) == ["a", "b", "c"]
    await client.close()


async def test_delta_stranger_nacking_under_a_node_id_cannot_empty_its_fresh_reconnect(xds: Harness) -> None:
    xds.publish(CLUSTERS)
    for _ in range(3):  # the stranger keeps at it
        stranger = xds.delta(make_node("reviews-1"))
        await stranger.request(CLUSTER)
        await stranger.nack(await stranger.recv_type(CLUSTER), "rejected by a stranger")
        await stranger.expect_nothing()
        await stranger.close()
    proxy = xds.delta(make_node("reviews-1"))  # the real proxy, restarted: it holds nothing
    await proxy.request(CLUSTER)
    assert sorted(versions(await proxy.recv_type(CLUSTER))) == ["a", "b", "c"]


async def test_sotw_stranger_nack_does_not_hold_back_a_push_to_the_connected_proxy(xds: Harness) -> None:
    """A guard (this held on main too): the memory is consulted only when a stream starts."""
    xds.publish(CLUSTERS)
    proxy = xds.sotw(make_node("reviews-1"))
    await proxy.request(CLUSTER)
    first = await proxy.recv_type(CLUSTER)
    await xds.ack(proxy, first)
    stranger = xds.sotw(make_node("reviews-1"))
    await stranger.request(CLUSTER, version=first.version_info)
    xds.publish(clusters_only(static_cluster("a", 2000)))
    update = await stranger.recv_type(CLUSTER)
    await stranger.nack(update, "rejected by a stranger", last_good=first.version_info)
    # the connected proxy gets the same update all the same
    assert (await proxy.recv_type(CLUSTER)).version_info == update.version_info


async def test_nacks_for_versions_never_sent_and_unknown_nonces_change_nothing(xds: Harness) -> None:
    xds.publish(CLUSTERS)
    client = xds.sotw(make_node("liar"))
    await client.request(CLUSTER)
    first = await client.recv_type(CLUSTER)
    await client.request(CLUSTER, version="never-sent", nonce="no-such-nonce", error="bogus")
    delta = xds.delta(make_node("liar-delta"))
    await delta.request(CLUSTER)
    got = await delta.recv_type(CLUSTER)
    await delta.request(CLUSTER, nonce="no-such-nonce", error="bogus")
    await delta.request(CLUSTER, nonce=got.nonce + "x", error="bogus")
    await served(xds)
    xds.publish(clusters_only(static_cluster("a", 3000)))
    assert (await client.recv_type(CLUSTER)).version_info != first.version_info
    assert list(versions(await delta.recv_type(CLUSTER))) == ["a"]


async def test_unknown_types_empty_node_and_100k_names(xds: Harness) -> None:
    xds.publish(CLUSTERS)
    unknown = xds.sotw(make_node("odd"))
    await unknown.request("type.googleapis.com/no.such.Type")
    await unknown.request(CLUSTER)
    assert names(await unknown.recv_type(CLUSTER)) == ["a", "b", "c"]
    empty = xds.sotw(make_node(""))
    await empty.request(CLUSTER)
    await empty.drain()
    many = xds.delta(make_node("many"))
    await many.request(CLUSTER, subscribe=[f"name-{i}" for i in range(100_000)])
    await many.drain(timeout=1.0)
    sotw_many = xds.sotw(make_node("many-sotw"))
    await sotw_many.request(LISTENER, [f"l-{i}" for i in range(100_000)])
    await sotw_many.drain(timeout=1.0)
    await served(xds)


async def test_abandoned_streams_are_released(xds: Harness) -> None:
    xds.publish(CLUSTERS)
    for i in range(50):
        channel = xds.channel()
        stream = channel.stream_stream(
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )()
        request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
        request.node.CopyFrom(make_node(f"abandoned-{i}"))
        await stream.write(request)
        # never read, never closed by the client: the channel goes away under it
        await channel.close(grace=None)
    await wait_until(lambda: not xds.registry.streams, timeout=10, what="abandoned streams to be released")
    await served(xds)
    # no stream left: every shape's snapshot is freed
    await wait_until(lambda: xds.cache.shapes() == {}, timeout=10, what="the shapes to be freed")


async def test_nack_memory_stays_flat_for_many_nacking_node_ids(xds: Harness) -> None:
    xds.publish(CLUSTERS)
    first = xds.sotw(make_node("probe"))
    await first.request(CLUSTER)
    held = (await first.recv_type(CLUSTER)).version_info
    xds.registry.nacks.max_entries = 100
    for i in range(300):
        client = xds.sotw(make_node(f"nacker-{i}"))
        await client.request(CLUSTER, version=held)
        xds.publish(clusters_only(static_cluster("a", 1000 + i)))
        update = await client.recv_type(CLUSTER)
        await client.nack(update, "no", last_good=held)
        await client.close()
    await asyncio.sleep(0)
    assert len(xds.registry.nacks) <= 100


async def test_nack_memory_expires_and_is_bounded() -> None:
    now = [0.0]
    memory = NackMemory(max_entries=3, ttl=10.0, clock=lambda: now[0])
    memory.remember("k", CLUSTER, "v1", "v2")
    assert memory.rejected("k", CLUSTER, "v1", "v2")
    assert not memory.rejected("other", CLUSTER, "v1", "v2")  # another proxy is not affected
    assert not memory.rejected("k", CLUSTER, "v0", "v2")  # nor the same one holding something else
    now[0] = 11.0
    assert not memory.rejected("k", CLUSTER, "v1", "v2")
    for i in range(10):
        memory.remember("k", CLUSTER, "v1", f"x{i}")
    assert len(memory) == 3
