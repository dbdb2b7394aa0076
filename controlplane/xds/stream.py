"""The asyncio driver of one xDS stream: feeds requests and snapshot changes to a state machine, writes its
responses. Protocol logic lives in sotw.py / delta.py; this file only does I/O.

Latest wins: while a write to a slow proxy is blocked by flow control, newer snapshots only replace the
cache's pointer; when the write completes the stream reads the newest snapshot, never a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

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
) -> None:
    iterator = aiter(requests)
    try:
        first = await anext(iterator)
    except StopAsyncIteration:
        return
    except DecodeError as exc:
        await _malformed(context, exc)
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
    queue: asyncio.Queue[Message | DecodeError | None] = asyncio.Queue()
    async def read() -> None:
        try:
            await queue.put(first)
            async for request in iterator:
                await queue.put(request)
        except DecodeError as exc:
            await queue.put(exc)
        finally:
            await queue.put(None)

    reader = asyncio.create_task(read(), name=f"xds-read-{status.stream_id}")
    try:
        state = make_state(status, watch.snapshot, nonce_factory(status.stream_id), fixed_type)
        await _loop(state, queue, watch, context, status, closing or asyncio.Event())
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        watch.cancel()
        registry.close(status)
        log.info("node %s disconnected (%s)", node.id, protocol)


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


async def _loop(
    state: StateMachine,
    queue: asyncio.Queue[Message | DecodeError | None],
    watch: Any,
    context: grpc.aio.ServicerContext[Any, Any],
    status: StreamStatus,
    closing: asyncio.Event,
) -> None:
    changed = asyncio.ensure_future(watch.changed())
    # On shutdown the stream ends normally (status OK) instead of being cancelled by grpc after the
    # grace period; the proxy keeps its config and reconnects to the next server.
    stopping = asyncio.ensure_future(closing.wait())
    try:
        while True:
            got = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({got, changed, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                got.cancel()
                return
            out: list[Outgoing] = []
            if got in done:
                request = got.result()
                if request is None:
                    return
                if isinstance(request, DecodeError):
                    await _malformed(context, request)
                    return
                out += state.on_request(request)
            else:
                got.cancel()
            if changed in done:
                out += state.on_snapshot(watch.snapshot)
                changed = asyncio.ensure_future(watch.changed())
            await _write(out, context, status)
            # drop the payloads before waiting again: a thousand idle streams each holding their last
            # responses would keep N x K bytes alive
            out.clear()
    finally:
        changed.cancel()
        stopping.cancel()
