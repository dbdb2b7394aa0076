"""The test harness: one real XdsServer in-process on 127.0.0.1:0 with its cache and status registry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TypeAlias

import grpc
from ads_client import ADS, DeltaClient, SotwClient, make_node, open_delta, open_sotw
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy_config import constant

from controlplane.translate.resources import Resources
from controlplane.xds.cache import ResourceFactory, SnapshotCache
from controlplane.xds.server import XdsServer
from controlplane.xds.status import StatusRegistry, TypeStatus

Response: TypeAlias = discovery_pb2.DiscoveryResponse | discovery_pb2.DeltaDiscoveryResponse


class Harness:
    """One cache, one status registry and one running XdsServer; clients opened through it are closed at
    the end of the test."""

    def __init__(self, resources: Resources | None = None) -> None:
        self.cache = SnapshotCache(constant(resources or Resources()))
        self.registry = StatusRegistry()
        self.server = XdsServer(self.cache, self.registry, "127.0.0.1:0")
        self._channels: list[grpc.aio.Channel] = []
        self._streams: list[SotwClient | DeltaClient] = []

    async def start(self) -> None:
        await self.server.start()

    def channel(self) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.server.port}")
        self._channels.append(channel)
        return channel

    def sotw(self, node: base_pb2.Node | None = None, *, service: str = ADS,
             channel: grpc.aio.Channel | None = None) -> SotwClient:
        client = open_sotw(channel or self.channel(), node if node is not None else make_node(), service)
        self._streams.append(client)
        return client

    def sotw_without_node(self) -> SotwClient:
        client = open_sotw(self.channel(), None)
        self._streams.append(client)
        return client

    def delta_without_node(self) -> DeltaClient:
        client = open_delta(self.channel(), None)
        self._streams.append(client)
        return client

    def delta(self, node: base_pb2.Node | None = None, *, service: str = ADS,
              channel: grpc.aio.Channel | None = None) -> DeltaClient:
        client = open_delta(channel or self.channel(), node if node is not None else make_node(), service)
        self._streams.append(client)
        return client

    def _type_status(self, client: SotwClient | DeltaClient, type_url: str) -> TypeStatus | None:
        assert client.node is not None
        for stream in self.registry.streams.values():
            if stream.node_id == client.node.id and type_url in stream.types:
                return stream.types[type_url]
        return None

    async def ack(self, client: SotwClient | DeltaClient, response: Response,
                  names: Iterable[str] = ()) -> None:
        """ACK `response` and wait until the server has recorded the ACK, so that a snapshot published
        next cannot overtake it (which would make the ACK's nonce stale)."""
        before = self._type_status(client, response.type_url)
        acked_at = before.acked_at if before else None
        if isinstance(client, SotwClient):
            assert isinstance(response, discovery_pb2.DiscoveryResponse)
            await client.ack(response, names)
        else:
            assert isinstance(response, discovery_pb2.DeltaDiscoveryResponse)
            await client.ack(response)

        def recorded() -> bool:
            status = self._type_status(client, response.type_url)
            return status is not None and status.acked_at is not None and status.acked_at != acked_at

        await wait_until(recorded, timeout=2.0, what=f"the server to record the ACK of {response.nonce}")

    async def nack(self, client: SotwClient, response: discovery_pb2.DiscoveryResponse, error: str, *,
                   names: Iterable[str] = (), last_good: str = "") -> None:
        """NACK a SotW response and wait until the server has recorded it."""
        await client.nack(response, error, names=names, last_good=last_good)

        def recorded() -> bool:
            status = self._type_status(client, response.type_url)
            return status is not None and (status.nacked_version, status.nack_error) == (
                response.version_info, error)

        await wait_until(recorded, timeout=2.0, what=f"the server to record the NACK of {response.nonce}")

    def publish(self, resources: Resources | ResourceFactory) -> int:
        """Publish new resources to every live proxy shape; returns how many shapes changed."""
        factory = resources if callable(resources) else constant(resources)
        return self.cache.set_factory(factory)

    async def close(self) -> None:
        for stream in self._streams:
            await stream.close()
        for channel in self._channels:
            await channel.close()
        await self.server.close(grace=0)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll `predicate` until it holds (server-side effects of a client action, e.g. a disconnect)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)
