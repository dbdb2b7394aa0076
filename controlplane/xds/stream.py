"""The asyncio driver of one xDS stream: feeds requests and snapshot changes to a state machine, writes its
responses. Protocol logic lives in sotw.py / delta.py; this file only does I/O.

Latest wins: while a write to a slow proxy is blocked by flow control, newer snapshots only replace the
cache's pointer; when the write completes the stream reads the newest snapshot, never a backlog.

One queue per stream carries everything the loop reacts to, in arrival order: the proxy's requests (from
a reader task), "the snapshot changed" (from the watch, at most one queued at a time) and "the server is
closing". The loop only awaits that queue: waiting on three futures per request (`asyncio.wait`) cost
more than the protocol work of an ACK when 500 sidecars connect at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeAlias

import grpc
from google.protobuf.message import DecodeError, Message

from controlplane.model.identity import ProxyIdentity
from controlplane.translate.resources import SHORT_NAMES
from controlplane.xds import metrics
from controlplane.xds.auth import Authenticator, Refusal
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.node import NodeError, identity_of
from controlplane.xds.response import Outgoing, nonce_factory
from controlplane.xds.snapshot import Snapshot
from controlplane.xds.status import StatusRegistry, StreamStatus

log = logging.getLogger(__name__)


class StateMachine(Protocol):
    def on_request(self, request: Any) -> list[Outgoing]: ...
    def on_snapshot(self, snapshot: Snapshot) -> list[Outgoing]: ...


StateFactory = Callable[[StreamStatus, Snapshot, Callable[[], str], str | None], StateMachine]


async def serve_stream(
    requests: AsyncIterator[Message],
    context: grpc.aio.ServicerContext[Any, Any],
    *,
    cache: SnapshotCache,
    registry: StatusRegistry,
    make_state: StateFactory,
    protocol: str,
    fixed_type: str | None,
    closing: asyncio.Event | None = None,
    authenticator: Authenticator | None = None,
    first: Message | DecodeError | None = None,
) -> None:
    """Serve one stream until the proxy ends it or the server closes. `first`: the stream's first request
    when the caller has read it already (the server does, to build the snapshot ahead), else read here."""
    iterator = aiter(requests)
    if first is None:
        first = await read_first(iterator)
        if first is None:
            return
    if isinstance(first, DecodeError):
        await _malformed(context, first)  # aborts the call
        return
    node = first.node
    if not first.HasField("node"):
        metrics.BAD_REQUESTS.labels("missing_node").inc()
        log.warning("closing an xDS stream from %s: its first request carries no node", context.peer())
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first request of a stream must set node")
    try:
        identity: ProxyIdentity = identity_of(node)
    except NodeError as exc:
        metrics.BAD_REQUESTS.labels("bad_node").inc()
        log.warning("closing an xDS stream from %s: %s", context.peer(), exc)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    principal = ""
    if authenticator is not None:
        try:
            metadata = tuple(context.invocation_metadata() or ())
            principal = authenticator.authenticate(metadata, node.id, identity)
        except Refusal as refusal:
            metrics.BAD_REQUESTS.labels("unauthenticated" if refusal.code is grpc.StatusCode.UNAUTHENTICATED
                                        else "permission_denied").inc()
            log.warning("refusing the xDS stream of node %s from %s: %s", node.id, context.peer(),
                        refusal.message)
            await context.abort(refusal.code, refusal.message)
    status = registry.open(node.id, identity, protocol, node)
    status.principal = principal
    watch = cache.watch(identity)
    log.info("node %s connected (%s, %s)", node.id, protocol, identity.describe())
    events = _Events()
    events.put(first)

    async def read() -> None:
        try:
            async for request in iterator:
                events.put(request)
        except DecodeError as exc:
            events.put(exc)
        finally:
            events.put(None)

    async def forward_changes() -> None:
        while True:
            await watch.changed()
            events.changed()

    tasks = [asyncio.create_task(read(), name=f"xds-read-{status.stream_id}"),
             asyncio.create_task(forward_changes(), name=f"xds-watch-{status.stream_id}")]
    # On shutdown the stream ends normally (status OK) instead of being cancelled by grpc after the
    # grace period; the proxy keeps its config and reconnects to the next server.
    if closing is not None:
        if closing.is_set():
            events.close()
        else:
            tasks.append(asyncio.create_task(_on(closing, events.close),
                                             name=f"xds-close-{status.stream_id}"))
    try:
        state = make_state(status, watch.snapshot, nonce_factory(status.stream_id), fixed_type)
        await _loop(state, events, watch, context, status)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        watch.cancel()
        registry.close(status)
        log.info("node %s disconnected (%s)", node.id, protocol)


async def read_first(iterator: AsyncIterator[Message]) -> Message | DecodeError | None:
    """A stream's first request; the error when it cannot be decoded; None when the stream ended first."""
    try:
        return await anext(iterator)
    except StopAsyncIteration:
        return None
    except DecodeError as exc:
        return exc


async def _write(
    out: list[Outgoing],
    context: grpc.aio.ServicerContext[Any, Any],
    status: StreamStatus,
) -> None:
    for response in out:
        log.debug("node %s <- %s version=%s nonce=%s names=%d removed=%d", status.node_id,
                  SHORT_NAMES[response.type_url], response.version, response.nonce,
                  len(response.names), len(response.removed))
        await context.write(response.payload)


async def _malformed(context: grpc.aio.ServicerContext[Any, Any], exc: DecodeError) -> None:
    metrics.BAD_REQUESTS.labels("malformed").inc()
    log.warning("closing an xDS stream from %s: malformed request: %s", context.peer(), exc)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {exc}")


class _Changed:
    """Queued when the shape's snapshot was replaced (the loop then reads the newest one)."""


class _Closing:
    """Queued when the server closes."""


CHANGED, CLOSING = _Changed(), _Closing()
StreamEvent: TypeAlias = Message | DecodeError | _Changed | _Closing | None


class _Events:
    """A stream's queue of what to react to; a snapshot change is queued at most once at a time."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
        self._change_queued = False

    def put(self, request: Message | DecodeError | None) -> None:
        self._queue.put_nowait(request)

    def changed(self) -> None:
        if not self._change_queued:
            self._change_queued = True
            self._queue.put_nowait(CHANGED)

    def close(self) -> None:
        self._queue.put_nowait(CLOSING)

    async def get(self) -> StreamEvent:
        event = await self._queue.get()
        if event is CHANGED:
            self._change_queued = False
        return event


async def _on(event: asyncio.Event, then: Callable[[], None]) -> None:
    await event.wait()
    then()


async def _loop(
    state: StateMachine,
    events: _Events,
    watch: Any,
    context: grpc.aio.ServicerContext[Any, Any],
    status: StreamStatus,
) -> None:
    while True:
        event = await events.get()
        if event is CLOSING or event is None:
            return
        if isinstance(event, DecodeError):
            await _malformed(context, event)
            return
        out = state.on_snapshot(watch.snapshot) if event is CHANGED else state.on_request(event)
        await _write(out, context, status)
        # drop the payloads before waiting again: a thousand idle streams each holding their last
        # responses would keep N x K bytes alive
        out.clear()
