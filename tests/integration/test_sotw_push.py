"""State-of-the-world ADS pushes: order, no warming, make-before-break, latest wins, deterministic versions
and spliced bytes, snapshot sharing between proxies and cleanup on disconnect."""

from __future__ import annotations

import asyncio
import gc

import grpc
import pytest
from ads_client import SotwClient, make_node, messages, names
from envoy.service.discovery.v3 import discovery_pb2
from envoy_config import MESSAGE_TYPES, ROUTE_NAME, clusters_only, mesh, static_cluster
from xds_harness import Harness, wait_until

from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

pytestmark = pytest.mark.asyncio

ADS_SOTW = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


async def subscribe_all(xds: Harness, client: SotwClient, eds: list[str],
                        ) -> dict[str, discovery_pb2.DiscoveryResponse]:
    """Subscribe like Envoy does (CDS, EDS for the clusters, LDS, RDS) and ACK every response."""
    got: dict[str, discovery_pb2.DiscoveryResponse] = {}
    for type_url, names_ in ((CLUSTER, []), (ENDPOINT, eds), (LISTENER, []), (ROUTE, [ROUTE_NAME])):
        await client.request(type_url, names_)
        got[type_url] = await client.recv_type(type_url)
        await xds.ack(client, got[type_url], names_)
    await client.expect_nothing()
    return got


async def test_push_order_on_a_change_is_cds_eds_lds_rds(xds: Harness) -> None:
    xds.publish(mesh({"a": 8001, "b": 8002}))
    client = xds.sotw()
    before = await subscribe_all(xds, client, ["a", "b"])
    # every type changes: a cluster timeout, an endpoint port, the listener port and the routes
    xds.publish(mesh({"a": 9001, "b": 8002}, routed=["a"], timeouts={"b": 5000}, listener_port=15002))
    received = [await client.recv() for _ in range(4)]
    assert [r.type_url for r in received] == [CLUSTER, ENDPOINT, LISTENER, ROUTE]
    for response in received:
        assert response.version_info != before[response.type_url].version_info


async def test_cds_push_is_followed_by_eds_and_lds_by_rds_even_when_unchanged(xds: Harness) -> None:
    """No warming: Envoy warms a changed cluster (listener) until it gets endpoints (routes)."""
    xds.publish(mesh({"a": 8001, "b": 8002}))
    client = xds.sotw()
    before = await subscribe_all(xds, client, ["a", "b"])

    xds.publish(mesh({"a": 8001, "b": 8002}, timeouts={"a": 2500}))
    clusters = await client.recv_type(CLUSTER)
    endpoints = await client.recv_type(ENDPOINT)
    assert clusters.version_info != before[CLUSTER].version_info
    assert endpoints.version_info == before[ENDPOINT].version_info
    assert names(endpoints) == ["a", "b"]
    await xds.ack(client, clusters)
    await xds.ack(client, endpoints, ["a", "b"])
    await client.expect_nothing()

    xds.publish(mesh({"a": 8001, "b": 8002}, timeouts={"a": 2500}, listener_port=15009))
    listeners = await client.recv_type(LISTENER)
    routes = await client.recv_type(ROUTE)
    assert listeners.version_info != before[LISTENER].version_info
    assert routes.version_info == before[ROUTE].version_info
    assert names(routes) == [ROUTE_NAME]


async def test_make_before_break_removed_cluster_is_kept_until_listeners_and_routes_are_acked(
    xds: Harness,
) -> None:
    xds.publish(mesh({"a": 8001, "b": 8002}))
    client = xds.sotw()
    await subscribe_all(xds, client, ["a", "b"])

    # remove cluster b and the route to it (and change a, so that a CDS response is due at once)
    xds.publish(mesh({"a": 8001}, timeouts={"a": 2000}))
    clusters = await client.recv_type(CLUSTER)
    assert names(clusters) == ["a", "b"], "the first CDS response must still contain the removed cluster"
    endpoints = await client.recv_type(ENDPOINT)
    assert names(endpoints) == ["a", "b"]
    routes = await client.recv_type(ROUTE)
    assert "b" not in [r.route.cluster for r in messages(routes)[ROUTE_NAME].virtual_hosts[0].routes]
    await xds.ack(client, clusters)
    await xds.ack(client, endpoints, ["a", "b"])
    await client.expect_nothing()

    # only once the routes no longer pointing at b are ACKed, b goes
    await xds.ack(client, routes, [ROUTE_NAME])
    final = await client.recv_type(CLUSTER)
    assert names(final) == ["a"]
    after = await client.recv_type(ENDPOINT)
    assert names(after) == ["a"]


async def test_version_info_is_a_content_hash_equal_across_independent_servers(
    xds: Harness, xds2: Harness,
) -> None:
    xds.publish(mesh({"a": 8001, "b": 8002}))
    xds2.publish(mesh({"b": 8002, "a": 8001}))  # built independently, in another order
    one = await subscribe_all(xds, xds.sotw(), ["a", "b"])
    two = await subscribe_all(xds2, xds2.sotw(make_node("another-node")), ["a", "b"])
    for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        assert one[type_url].version_info == two[type_url].version_info, type_url
        assert one[type_url].version_info not in ("", "empty")

    # different content, different versions (only for the types that differ)
    xds2.publish(mesh({"a": 8001, "b": 8003}))
    changed = xds2.sotw(make_node("third"))
    three = await subscribe_all(xds2, changed, ["a", "b"])
    assert three[ENDPOINT].version_info != one[ENDPOINT].version_info
    assert three[CLUSTER].version_info == one[CLUSTER].version_info
    assert three[ROUTE].version_info == one[ROUTE].version_info


async def test_resource_bytes_parse_back_to_the_published_messages(xds: Harness) -> None:
    resources = mesh({"a": 8001, "b": 8002}, timeouts={"b": 1500})
    xds.publish(resources)
    call = xds.channel().stream_stream(ADS_SOTW, request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)()
    try:
        requests = [
            discovery_pb2.DiscoveryRequest(node=make_node(), type_url=CLUSTER),
            discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["a", "b"]),
            discovery_pb2.DiscoveryRequest(type_url=LISTENER),
            discovery_pb2.DiscoveryRequest(type_url=ROUTE, resource_names=[ROUTE_NAME]),
        ]
        for request in requests:
            await call.write(request.SerializeToString())
            raw = await asyncio.wait_for(call.read(), 2.0)
            assert isinstance(raw, bytes)
            response = discovery_pb2.DiscoveryResponse.FromString(raw)
            assert response.type_url == request.type_url
            published = resources.by_type[request.type_url]
            parsed = messages(response)
            assert parsed == published
            for any_message in response.resources:
                assert any_message.type_url == request.type_url
                message = MESSAGE_TYPES[request.type_url].FromString(any_message.value)
                assert message.SerializeToString(deterministic=True) == any_message.value
    finally:
        call.cancel()


async def test_latest_wins_a_client_that_does_not_read_gets_the_newest_snapshot_not_a_backlog(
    xds: Harness,
) -> None:
    padding = "x" * (256 * 1024)  # each CDS response is larger than the client's flow-control window

    def big(i: int) -> None:
        xds.publish(clusters_only(static_cluster("big", padding=f"{padding}-{i:02d}")))

    big(0)
    # no BDP probing: the client's receive window stays at 64 KiB while it does not read
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{xds.server.port}", options=[("grpc.http2.bdp_probe", 0)])
    client = xds.sotw(channel=channel)
    try:
        await client.request(CLUSTER)
        await wait_until(lambda: bool(xds.cache.shapes()), what="the stream to open")
        for i in range(1, 21):
            big(i)
            # pacing, not synchronization: give the server the chance to push each one if it could
            await asyncio.sleep(0.01)
        received = await client.drain(timeout=0.3)
    finally:
        await client.close()
        await channel.close()
    assert 1 <= len(received) <= 5, f"{len(received)} CDS responses: the server queued old snapshots"
    newest = received[-1]
    [cluster] = messages(newest).values()
    assert cluster.metadata.filter_metadata["test"]["padding"].endswith("-20")


async def test_proxies_with_identical_metadata_share_one_snapshot(xds: Harness) -> None:
    xds.publish(mesh({"a": 8001}))
    def cart(node_id: str, outbound: str = "127.0.0.1:15001") -> SotwClient:
        return xds.sotw(make_node(node_id, role="sidecar", namespace="shop", labels={"app": "cart"},
                                  outbound_address=outbound))

    one, two = cart("cart-1"), cart("cart-2")
    for client in (one, two):
        await client.request(CLUSTER)
        await client.recv_type(CLUSTER)
    shapes = xds.cache.shapes()
    assert len(shapes) == 1
    [(_, streams)] = shapes.values()
    assert streams == 2

    # a different outbound address is a different shape
    three = cart("cart-3", outbound="127.0.0.1:15002")
    await three.request(CLUSTER)
    await three.recv_type(CLUSTER)
    shapes = xds.cache.shapes()
    assert len(shapes) == 2
    assert sorted(str(identity.outbound_address) for identity in shapes) == ["127.0.0.1:15001",
                                                                              "127.0.0.1:15002"]
    assert sorted(streams for _, streams in shapes.values()) == [1, 2]


async def test_shape_is_dropped_after_its_last_stream_disconnects(xds: Harness) -> None:
    xds.publish(mesh({"a": 8001}))
    one, two = xds.sotw(make_node("p1")), xds.sotw(make_node("p2"))
    for client in (one, two):
        await client.request(CLUSTER)
        await client.recv_type(CLUSTER)
    assert [n for _, n in xds.cache.shapes().values()] == [2]
    await one.close()
    await wait_until(lambda: [n for _, n in xds.cache.shapes().values()] == [1],
                     what="the first stream to leave its shape")
    await two.close()
    await wait_until(lambda: not xds.cache.shapes(), what="the shape to be dropped")


async def test_per_stream_state_is_freed_on_disconnect(xds: Harness) -> None:
    xds.publish(mesh({"a": 8001, "b": 8002}))
    sotw = xds.sotw(make_node("sotw-proxy"))
    await subscribe_all(xds, sotw, ["a", "b"])
    delta = xds.delta(make_node("delta-proxy", outbound_address="127.0.0.1:15100"))
    await delta.request(CLUSTER)
    await delta.recv_type(CLUSTER)
    assert sorted(s["node"] for s in xds.registry.to_json()) == ["delta-proxy", "sotw-proxy"]
    assert len(xds.cache.interner) > 0

    await sotw.close()
    await delta.close()
    await wait_until(lambda: not xds.registry.streams, what="the registry to empty")
    assert xds.registry.to_json() == []
    await wait_until(lambda: not xds.cache.shapes(), what="the shapes to be dropped")
    gc.collect()
    assert len(xds.cache.interner) == 0, "resource bytes are still referenced after every stream left"
