"""--max-connection-age: a long-lived ADS stream is ended after the age (plus grace), so proxies
reconnect and rebalance across replicas; without it the stream stays."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from controlplane.model.identity import ProxyIdentity
from controlplane.translate.resources import CLUSTER, Resources
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.server import XdsServer
from controlplane.xds.status import StatusRegistry


def _resources(_: ProxyIdentity) -> Resources:
    resources = Resources()
    cluster = cluster_pb2.Cluster(name="c1", type=cluster_pb2.Cluster.STATIC)
    cluster.connect_timeout.FromSeconds(1)
    resources.add(CLUSTER, "c1", cluster)
    return resources


async def _stream_lifetime(max_age: float | None, wait: float) -> float | None:
    """Seconds until the server ended the stream, or None if it was still open after `wait`."""
    server = XdsServer(SnapshotCache(_resources), StatusRegistry(), "127.0.0.1:0", max_age)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            started = time.monotonic()
            await call.write(discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="p"), type_url=CLUSTER))
            await asyncio.wait_for(call.read(), 5)
            try:
                # the server sends nothing more unless asked: any return (EOF) or error is the end
                await asyncio.wait_for(call.read(), wait)
            except TimeoutError:
                call.cancel()
                return None
            return time.monotonic() - started
    except grpc.aio.AioRpcError:
        return time.monotonic() - started
    finally:
        await server.close(0)


@pytest.mark.asyncio
async def test_max_connection_age_ends_streams() -> None:
    lifetime = await _stream_lifetime(0.5, wait=5)
    assert lifetime is not None and 0.4 <= lifetime <= 3.0


@pytest.mark.asyncio
async def test_streams_stay_without_max_connection_age() -> None:
    assert await _stream_lifetime(None, wait=1.5) is None
