"""A scripted xDS client for protocol tests: it sends exactly the requests a test writes and lets the test
read each response (or assert that none comes) with a timeout.

Responses are read by a background task that starts on the first `recv`/`expect_nothing`, so a test can
also hold a stream open without reading it (to exercise flow control and latest-wins).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.cluster.v3 import cds_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy_config import resource_name, unpack
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from controlplane.model.identity import META_LABELS, META_NAMESPACE, META_OUTBOUND_ADDRESS, META_ROLE

ADS = "ads"
CDS = "cds"

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)


class StreamEnded(AssertionError):
    """The server ended the stream while the test expected a response."""

    def __init__(self, code: grpc.StatusCode | None, details: str | None) -> None:
        super().__init__(f"stream ended: {code} {details!r}")
        self.code = code
        self.details = details


def make_node(
    node_id: str = "proxy-1",
    *,
    role: str | None = None,
    namespace: str | None = None,
    labels: Mapping[str, str] | None = None,
    outbound_address: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> base_pb2.Node:
    metadata: dict[str, Any] = dict(extra or {})
    if role is not None:
        metadata[META_ROLE] = role
    if namespace is not None:
        metadata[META_NAMESPACE] = namespace
    if labels is not None:
        metadata[META_LABELS] = dict(labels)
    if outbound_address is not None:
        metadata[META_OUTBOUND_ADDRESS] = outbound_address
    node = base_pb2.Node(id=node_id, cluster="test")
    if metadata:
        struct = struct_pb2.Struct()
        struct.update(metadata)
        node.metadata.CopyFrom(struct)
    return node


class _Stream(Generic[RequestT, ResponseT]):
    def __init__(self, call: Any, node: base_pb2.Node | None) -> None:
        self.call = call
        self.node = node
        self.sent = 0
        self._queue: asyncio.Queue[ResponseT | StreamEnded] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.ended: StreamEnded | None = None

    async def send(self, request: RequestT) -> None:
        """Send a request as is."""
        await self.call.write(request)
        self.sent += 1

    def _with_node(self, request: RequestT) -> RequestT:
        if self.sent == 0 and self.node is not None:
            request.node.CopyFrom(self.node)
        return request

    def start_reading(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for response in self.call:
                await self._queue.put(response)
            ended = StreamEnded(await self.call.code(), await self.call.details())
        except grpc.aio.AioRpcError as error:
            ended = StreamEnded(error.code(), error.details())
        except asyncio.CancelledError:
            ended = StreamEnded(grpc.StatusCode.CANCELLED, "cancelled by the test")
        self.ended = ended
        await self._queue.put(ended)

    async def recv(self, timeout: float = 2.0) -> ResponseT:
        self.start_reading()
        try:
            got = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            raise AssertionError(f"no response within {timeout}s") from None
        if isinstance(got, StreamEnded):
            self._queue.put_nowait(got)
            raise got
        return got

    async def expect_nothing(self, timeout: float = 0.3) -> None:
        """Assert that no response arrives within `timeout` seconds (and that the stream stays open)."""
        self.start_reading()
        with contextlib.suppress(TimeoutError):
            got = await asyncio.wait_for(self._queue.get(), timeout)
            if isinstance(got, StreamEnded):
                self._queue.put_nowait(got)
                raise AssertionError(f"expected no response, but {got}")
            raise AssertionError(f"expected no response, got {_describe(got)}")

    async def drain(self, timeout: float = 0.3) -> list[ResponseT]:
        """Every response that arrives until `timeout` seconds pass without one."""
        out: list[ResponseT] = []
        self.start_reading()
        while True:
            try:
                got = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                return out
            if isinstance(got, StreamEnded):
                self._queue.put_nowait(got)
                return out
            out.append(got)

    async def ended_with(self, timeout: float = 5.0) -> StreamEnded:
        """Wait for the server to end the stream; responses before the end are discarded."""
        self.start_reading()
        async with asyncio.timeout(timeout):
            while True:
                got = await self._queue.get()
                if isinstance(got, StreamEnded):
                    self._queue.put_nowait(got)
                    return got

    async def close(self) -> None:
        self.call.cancel()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class SotwClient(_Stream[discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse]):
    async def request(
        self,
        type_url: str,
        names: Iterable[str] = (),
        *,
        version: str = "",
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        """Send a DiscoveryRequest; the stream's first request carries the node."""
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=list(names), version_info=version, response_nonce=nonce
        )
        if error is not None:
            request.error_detail.code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            request.error_detail.message = error
        await self.send(self._with_node(request))

    async def ack(self, response: discovery_pb2.DiscoveryResponse, names: Iterable[str] = ()) -> None:
        await self.request(response.type_url, names, version=response.version_info, nonce=response.nonce)

    async def nack(self, response: discovery_pb2.DiscoveryResponse, error: str, *,
                   names: Iterable[str] = (), last_good: str = "") -> None:
        """Reject `response`: Envoy repeats the last version it accepted and says why in error_detail."""
        await self.request(response.type_url, names, version=last_good, nonce=response.nonce, error=error)

    async def recv_type(self, type_url: str, timeout: float = 2.0) -> discovery_pb2.DiscoveryResponse:
        response = await self.recv(timeout)
        assert response.type_url == type_url, f"expected {type_url}, got {_describe(response)}"
        return response


class DeltaClient(_Stream[discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse]):
    async def request(
        self,
        type_url: str,
        *,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        initial_versions: Mapping[str, str] | None = None,
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            initial_resource_versions=dict(initial_versions or {}),
            response_nonce=nonce,
        )
        if error is not None:
            request.error_detail.code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            request.error_detail.message = error
        await self.send(self._with_node(request))

    async def ack(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        await self.request(response.type_url, nonce=response.nonce)

    async def nack(self, response: discovery_pb2.DeltaDiscoveryResponse, error: str) -> None:
        await self.request(response.type_url, nonce=response.nonce, error=error)

    async def recv_type(self, type_url: str, timeout: float = 2.0) -> discovery_pb2.DeltaDiscoveryResponse:
        response = await self.recv(timeout)
        assert response.type_url == type_url, f"expected {type_url}, got {_describe(response)}"
        return response


def open_sotw(channel: grpc.aio.Channel, node: base_pb2.Node | None, service: str = ADS) -> SotwClient:
    if service == ADS:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    else:
        call = cds_pb2_grpc.ClusterDiscoveryServiceStub(channel).StreamClusters()
    return SotwClient(call, node)


def open_delta(channel: grpc.aio.Channel, node: base_pb2.Node | None, service: str = ADS) -> DeltaClient:
    if service == ADS:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources()
    else:
        call = cds_pb2_grpc.ClusterDiscoveryServiceStub(channel).DeltaClusters()
    return DeltaClient(call, node)


def names(response: discovery_pb2.DiscoveryResponse | discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    """Resource names in a response, read from the unpacked resources themselves."""
    if isinstance(response, discovery_pb2.DiscoveryResponse):
        return [resource_name(unpack(r)) for r in response.resources]
    return [resource_name(unpack(r.resource)) for r in response.resources]


def messages(response: discovery_pb2.DiscoveryResponse | discovery_pb2.DeltaDiscoveryResponse,
             ) -> dict[str, Message]:
    if isinstance(response, discovery_pb2.DiscoveryResponse):
        unpacked = [unpack(r) for r in response.resources]
    else:
        unpacked = [unpack(r.resource) for r in response.resources]
    return {resource_name(m): m for m in unpacked}


def versions(response: discovery_pb2.DeltaDiscoveryResponse) -> dict[str, str]:
    return {r.name: r.version for r in response.resources}


def _describe(response: Message) -> str:
    if isinstance(response, discovery_pb2.DiscoveryResponse):
        return (f"SotW {response.type_url.rsplit('.', 1)[-1]} version={response.version_info} "
                f"nonce={response.nonce} names={names(response)}")
    if isinstance(response, discovery_pb2.DeltaDiscoveryResponse):
        return (f"delta {response.type_url.rsplit('.', 1)[-1]} nonce={response.nonce} "
                f"names={[r.name for r in response.resources]} removed={list(response.removed_resources)}")
    return repr(response)
