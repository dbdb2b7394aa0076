"""The gRPC xDS server: ADS (SotW and delta), the per-type discovery services and CSDS, on grpc.aio.

Handlers are registered generically so that responses go out as pre-spliced bytes (the identity
serializer): the serialized resources cached in snapshots are never re-encoded per stream.

Before a stream is served, its first request is read here and the proxy's snapshot is built off the event
loop (SnapshotCache.prepare): a burst of new proxies then queues on the cache's worker thread instead of
stalling health checks and other streams' ACKs for ~20 ms per new shape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.status.v3 import csds_pb2
from google.protobuf.message import DecodeError, Message

from controlplane.model.identity import ProxyIdentity
from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from controlplane.xds.auth import Authenticator, Refusal
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.csds import SERVICE as CSDS_SERVICE
from controlplane.xds.csds import Csds
from controlplane.xds.delta import DeltaState
from controlplane.xds.node import NodeError, identity_of
from controlplane.xds.sotw import SotwState
from controlplane.xds.status import StatusRegistry
from controlplane.xds.stream import StateFactory, read_first, serve_stream

log = logging.getLogger(__name__)

# service name -> (SotW method, delta method, fixed type URL or None for ADS)
SERVICES: dict[str, tuple[str, str, str | None]] = {
    "envoy.service.discovery.v3.AggregatedDiscoveryService": (
        "StreamAggregatedResources", "DeltaAggregatedResources", None),
    "envoy.service.cluster.v3.ClusterDiscoveryService": ("StreamClusters", "DeltaClusters", CLUSTER),
    "envoy.service.endpoint.v3.EndpointDiscoveryService": ("StreamEndpoints", "DeltaEndpoints", ENDPOINT),
    "envoy.service.listener.v3.ListenerDiscoveryService": ("StreamListeners", "DeltaListeners", LISTENER),
    "envoy.service.route.v3.RouteDiscoveryService": ("StreamRoutes", "DeltaRoutes", ROUTE),
    "envoy.service.secret.v3.SecretDiscoveryService": ("StreamSecrets", "DeltaSecrets", SECRET),
}

Handler = Callable[[AsyncIterator[Any], grpc.aio.ServicerContext[Any, Any]], Coroutine[Any, Any, None]]


def _identity(payload: bytes) -> bytes:
    return payload


def _sotw_state(status: Any, snapshot: Any, nonce: Any, fixed: str | None) -> SotwState:
    return SotwState(status, snapshot, nonce, fixed)


def _delta_state(status: Any, snapshot: Any, nonce: Any, fixed: str | None) -> DeltaState:
    return DeltaState(status, snapshot, nonce, fixed)


# Calls accepted by the HTTP/2 layer and not yet handed to a handler, before grpc starts refusing new ones
# (see XdsServer.start): room for every proxy of a large mesh reconnecting at once.
PENDING_CALLS = 10_000


class XdsServer:
    """start() / close() / wait_closed() lifecycle around one grpc.aio server."""

    def __init__(self, cache: SnapshotCache, registry: StatusRegistry, address: str,
                 max_connection_age: float | None = None, *, authenticator: Authenticator | None = None,
                 credentials: grpc.ServerCredentials | None = None) -> None:
        self.cache = cache
        # None: every stream is served (serve --insecure-xds, and protocol tests)
        self.authenticator = authenticator
        # TLS for the xDS port (serve --xds-tls, security/xds_tls.py); None: plaintext
        self.credentials = credentials
        self.max_connection_age = max_connection_age
        self.registry = registry
        self.address = address
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._closing = asyncio.Event()

    def _handler(self, make_state: StateFactory, protocol: str, fixed: str | None) -> Handler:
        async def handle(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> None:
            iterator = aiter(requests)
            first = await read_first(iterator)
            if first is None:
                return
            identity = None if isinstance(first, DecodeError) else self._admitted(first, context)
            if identity is not None:
                await self.cache.prepare(identity)
            try:
                await serve_stream(iterator, context, first=first,
                                   cache=self.cache, registry=self.registry, make_state=make_state,
                                   protocol=protocol, fixed_type=fixed, closing=self._closing,
                                   authenticator=self.authenticator)
            finally:
                if identity is not None:
                    self.cache.forget_prepared(identity)
        return handle

    def _admitted(self, first: Message, context: grpc.aio.ServicerContext[Any, Any]) -> ProxyIdentity | None:
        """The identity whose snapshot to build ahead for this stream, or None when serve_stream will
        refuse it (no node, bad metadata, a refused credential: nothing is built, no certificate issued
        for such callers); serve_stream checks again and says why."""
        node = getattr(first, "node", None)
        if node is None or not first.HasField("node"):
            return None
        try:
            identity = identity_of(node)
            if self.authenticator is not None:
                self.authenticator.authenticate(tuple(context.invocation_metadata() or ()), node.id, identity)
        except (NodeError, Refusal):
            return None
        return identity

    def _generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        handlers = []
        for service, (sotw_method, delta_method, fixed) in SERVICES.items():
            methods = {
                sotw_method: grpc.stream_stream_rpc_method_handler(
                    self._handler(_sotw_state, "sotw", fixed),
                    request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                    response_serializer=_identity,
                ),
                delta_method: grpc.stream_stream_rpc_method_handler(
                    self._handler(_delta_state, "delta", fixed),
                    request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                    response_serializer=_identity,
                ),
            }
            handlers.append(grpc.method_handlers_generic_handler(service, methods))
        csds = Csds(self.registry, self.cache.snapshot, self.authenticator)
        handlers.append(grpc.method_handlers_generic_handler(CSDS_SERVICE, {
            "FetchClientStatus": grpc.unary_unary_rpc_method_handler(
                csds.fetch, request_deserializer=csds_pb2.ClientStatusRequest.FromString,
                response_serializer=_identity),
            "StreamClientStatus": grpc.stream_stream_rpc_method_handler(
                csds.stream, request_deserializer=csds_pb2.ClientStatusRequest.FromString,
                response_serializer=_identity),
        }))
        return handlers

    async def start(self) -> None:
        self._closing = asyncio.Event()
        options: list[tuple[str, int]] = []
        if self.max_connection_age:
            # Proxies otherwise stay on the replica they first reached forever (istio #7878): after this
            # age the connection gets a GOAWAY, its streams a short grace, and Envoy reconnects through
            # its load balancing — to any replica, which computes the same versions.
            options += [
                ("grpc.max_connection_age_ms", int(self.max_connection_age * 1000)),
                ("grpc.max_connection_age_grace_ms", min(5_000, int(self.max_connection_age * 1000))),
            ]
        self._server = grpc.aio.server(
            options=[
                *options,
                # Envoy keeps ADS streams open for hours; let its keepalive pings through.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 256 * 1024 * 1024),
                # grpc cancels calls not picked up within this time (default 30 s); a burst of new proxy
                # shapes builds snapshots on the event loop, which must not cost connections
                ("grpc.server_max_unrequested_time_in_server", 600),
                # calls the server has not picked up yet, past which grpc refuses new ones at random
                # (defaults 1,000 / 3,000): every proxy reconnects at once after a restart, and at 2,000
                # streams a burst lost 4-7 % of them (CANCELLED, or INTERNAL on the client's first write)
                ("grpc.server.max_pending_requests", PENDING_CALLS),
                ("grpc.server.max_pending_requests_hard_limit", 2 * PENDING_CALLS),
            ]
        )
        self._server.add_generic_rpc_handlers(self._generic_handlers())
        if self.credentials is not None:
            self.port = self._server.add_secure_port(self.address, self.credentials)
        else:
            self.port = self._server.add_insecure_port(self.address)
        if self.port == 0:
            raise OSError(f"cannot listen for xDS on {self.address}")
        await self._server.start()
        log.info("xDS server listening on %s (port %d)", self.address, self.port)

    async def close(self, grace: float = 1.0) -> None:
        """Stop accepting streams and end the open ones; proxies keep their config and reconnect."""
        self._closing.set()
        if self._server is not None:
            await self._server.stop(grace)

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()
