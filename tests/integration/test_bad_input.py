"""Malformed streams end with a clear status and never affect the server or other streams."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from ads_client import make_node, names
from envoy.service.discovery.v3 import discovery_pb2
from envoy_config import clusters_only, static_cluster
from xds_harness import Harness

from controlplane.translate.resources import CLUSTER

pytestmark = pytest.mark.asyncio

ADS_SOTW = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
ADS_DELTA = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"


async def _still_serving(xds: Harness) -> None:
    client = xds.sotw(make_node("healthy"))
    await client.request(CLUSTER)
    assert names(await client.recv_type(CLUSTER)) == ["a"]


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
async def test_first_request_without_node_ends_the_stream_with_invalid_argument(
    xds: Harness, protocol: str,
) -> None:
    xds.publish(clusters_only(static_cluster("a")))
    bystander = xds.sotw(make_node("bystander"))
    await bystander.request(CLUSTER)
    await bystander.recv_type(CLUSTER)

    if protocol == "sotw":
        client = xds.sotw_without_node()
        await client.send(discovery_pb2.DiscoveryRequest(type_url=CLUSTER))
        ended = await client.ended_with()
    else:
        delta = xds.delta_without_node()
        await delta.send(discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER))
        ended = await delta.ended_with()
    assert ended.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "node" in (ended.details or "")

    await _still_serving(xds)
    # the open stream of another proxy is unaffected
    xds.publish(clusters_only(static_cluster("a"), static_cluster("b")))
    assert names(await bystander.recv_type(CLUSTER)) == ["a", "b"]


@pytest.mark.parametrize(
    ("metadata", "mentions"),
    [
        ({"role": "bogus"}, "role"),
        ({"outbound_address": "nope"}, "outbound_address"),
        ({"labels": {"app": 3}}, "labels"),
    ],
    ids=["role", "outbound_address", "labels"],
)
async def test_bad_node_metadata_ends_the_stream_with_invalid_argument(
    xds: Harness, metadata: dict[str, object], mentions: str,
) -> None:
    xds.publish(clusters_only(static_cluster("a")))
    client = xds.sotw(make_node("bad-meta", extra=metadata))
    await client.request(CLUSTER)
    ended = await client.ended_with()
    assert ended.code == grpc.StatusCode.INVALID_ARGUMENT
    assert mentions in (ended.details or "")
    assert xds.registry.to_json() == []
    await _still_serving(xds)


async def test_bad_node_metadata_on_a_delta_stream_is_invalid_argument(xds: Harness) -> None:
    client = xds.delta(make_node("bad-meta", role="bogus"))
    await client.request(CLUSTER)
    ended = await client.ended_with()
    assert ended.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_unknown_type_url_gets_no_response_and_the_stream_stays_usable(xds: Harness) -> None:
    xds.publish(clusters_only(static_cluster("a")))
    sotw = xds.sotw()
    await sotw.request("type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig")
    await sotw.expect_nothing()
    await sotw.request(CLUSTER)
    assert names(await sotw.recv_type(CLUSTER)) == ["a"]

    delta = xds.delta(make_node("delta"))
    await delta.request("type.googleapis.com/no.such.Type", subscribe=["x"])
    await delta.expect_nothing()
    await delta.request(CLUSTER)
    assert names(await delta.recv_type(CLUSTER)) == ["a"]


async def _raw_stream_end(call: grpc.aio.StreamStreamCall, writes: list[bytes]) -> grpc.StatusCode:
    for payload in writes:
        await call.write(payload)
    async with asyncio.timeout(5):
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as error:
            return error.code()
        return await call.code()


@pytest.mark.parametrize("method", [ADS_SOTW, ADS_DELTA], ids=["sotw", "delta"])
@pytest.mark.parametrize("after_valid_request", [False, True], ids=["first", "after-valid-request"])
async def test_garbage_bytes_fail_that_stream_and_the_server_keeps_serving(
    xds: Harness, method: str, after_valid_request: bool,
) -> None:
    xds.publish(clusters_only(static_cluster("a")))
    call = xds.channel().stream_stream(method, request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)()
    writes = [b"\xff\xff\xff"]
    if after_valid_request:
        valid: discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest
        if method == ADS_SOTW:
            valid = discovery_pb2.DiscoveryRequest(node=make_node("raw"), type_url=CLUSTER)
        else:
            valid = discovery_pb2.DeltaDiscoveryRequest(node=make_node("raw"), type_url=CLUSTER)
        writes.insert(0, valid.SerializeToString())
    code = await _raw_stream_end(call, writes)
    assert code != grpc.StatusCode.OK, "a stream that sent garbage must fail, not end cleanly"
    await _still_serving(xds)
