"""CSDS on the xDS port: a scripted ADS client connects, ACKs, and CSDS reports its resources as SYNCED."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from prometheus_client import REGISTRY

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


def _subscribed() -> float:
    labels = {"type": "clusters", "role": "sidecar"}
    return REGISTRY.get_sample_value("controlplane_xds_subscribed_streams", labels) or 0.0


@pytest.mark.asyncio
async def test_csds_reports_acked_resources() -> None:
    subscribed_before = _subscribed()
    registry = StatusRegistry()
    server = XdsServer(SnapshotCache(_resources), registry, "127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            await call.write(discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="p1"), type_url=CLUSTER))
            response = await asyncio.wait_for(call.read(), 5)
            csds = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
            before = await csds.FetchClientStatus(csds_pb2.ClientStatusRequest())
            assert before.config[0].generic_xds_configs[0].config_status == csds_pb2.STALE
            await call.write(
                discovery_pb2.DiscoveryRequest(
                    type_url=CLUSTER, version_info=response.version_info, response_nonce=response.nonce
                )
            )
            for _ in range(50):
                status = await csds.FetchClientStatus(csds_pb2.ClientStatusRequest())
                if status.config[0].generic_xds_configs[0].config_status == csds_pb2.SYNCED:
                    break
                await asyncio.sleep(0.02)
            (config,) = status.config
            assert config.node.id == "p1"
            (generic,) = config.generic_xds_configs
            assert (generic.name, generic.type_url, generic.config_status) == ("c1", CLUSTER, csds_pb2.SYNCED)
            assert cluster_pb2.Cluster.FromString(generic.xds_config.value).name == "c1"
            assert _subscribed() == subscribed_before + 1
            call.cancel()
            for _ in range(100):
                if not registry.streams:
                    break
                await asyncio.sleep(0.02)
            assert _subscribed() == subscribed_before
    finally:
        await server.close(0)
