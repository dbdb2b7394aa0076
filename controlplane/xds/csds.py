"""Client Status Discovery Service (envoy.service.status.v3): which proxy has which config, for standard
tools (e.g. `istioctl x proxy-status`-style clients, grpcurl) on the xDS port.

For each connected proxy it reports, per resource of its snapshot, the version, the resource itself
(unless `exclude_resource_contents`), and the sync state of its type: SYNCED when the proxy ACKed the
current config, STALE when a newer one has not reached it yet, ERROR with Envoy's message after a NACK.

With an authenticator (every server not started with --insecure-xds) a call needs the same credential as
an xDS stream and reports only the proxies of the identity it proves (xds/auth.py): configuration is not
for strangers even with private keys redacted.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.service.status.v3 import csds_pb2
from envoy.type.matcher.v3 import node_pb2, string_pb2

from controlplane.model.identity import ProxyIdentity
from controlplane.xds.auth import Authenticator, Refusal
from controlplane.xds.redact import redacted_any
from controlplane.xds.snapshot import Snapshot
from controlplane.xds.status import NACKED, SYNCED, StatusRegistry, StreamStatus

log = logging.getLogger(__name__)

SERVICE = "envoy.service.status.v3.ClientStatusDiscoveryService"


def _string_matches(matcher: string_pb2.StringMatcher, value: str) -> bool:
    kind = matcher.WhichOneof("match_pattern")
    if kind == "exact":
        return value == matcher.exact
    if kind == "prefix":
        return value.startswith(matcher.prefix)
    if kind == "suffix":
        return value.endswith(matcher.suffix)
    if kind == "contains":
        return matcher.contains in value
    return True


def _selected(status: StreamStatus, matchers: list[node_pb2.NodeMatcher]) -> bool:
    if not matchers:
        return True
    return any(not m.HasField("node_id") or _string_matches(m.node_id, status.node_id) for m in matchers)


def client_config(status: StreamStatus, snapshot: Snapshot, with_contents: bool) -> csds_pb2.ClientConfig:
    config = csds_pb2.ClientConfig()
    if status.node is not None:
        config.node.CopyFrom(status.node)
    else:
        config.node.id = status.node_id
    for type_url, type_status in status.types.items():
        state = type_status.state(snapshot.version)
        config_status = {SYNCED: csds_pb2.SYNCED, NACKED: csds_pb2.ERROR}.get(state, csds_pb2.STALE)
        client_status = {SYNCED: dump_pb2.ACKED, NACKED: dump_pb2.NACKED}.get(state, dump_pb2.REQUESTED)
        for resource in snapshot.of_type(type_url).values():
            generic = config.generic_xds_configs.add(
                type_url=type_url, name=resource.name, version_info=resource.version,
                config_status=config_status, client_status=client_status,
            )
            if with_contents:
                generic.xds_config.CopyFrom(redacted_any(type_url, resource.message, resource.any_payload))
            if state == NACKED:
                generic.error_state.details = type_status.nack_error
                generic.error_state.version_info = type_status.nacked_version
    return config


def _everyone(_: ProxyIdentity) -> bool:
    return True


class Csds:
    def __init__(self, registry: StatusRegistry, snapshot_of: Callable[[ProxyIdentity], Snapshot],
                 authenticator: Authenticator | None = None) -> None:
        self.registry = registry
        self.snapshot_of = snapshot_of
        self.authenticator = authenticator

    def respond(self, request: csds_pb2.ClientStatusRequest,
                visible: Callable[[ProxyIdentity], bool] = _everyone) -> csds_pb2.ClientStatusResponse:
        response = csds_pb2.ClientStatusResponse()
        matchers = list(request.node_matchers)
        for status in sorted(self.registry.streams.values(), key=lambda s: (s.node_id, s.stream_id)):
            if visible(status.identity) and _selected(status, matchers):
                snapshot = self.snapshot_of(status.identity)
                response.config.append(
                    client_config(status, snapshot, not request.exclude_resource_contents))
        return response

    async def _scope(self, context: Any) -> Callable[[ProxyIdentity], bool]:
        if self.authenticator is None:
            return _everyone
        metadata: Sequence[tuple[str, str | bytes]] = tuple(context.invocation_metadata() or ())
        try:
            return self.authenticator.scope(metadata)
        except Refusal as refusal:
            log.warning("refused a CSDS call from %s: %s", context.peer(), refusal.message)
            await context.abort(refusal.code, refusal.message)
            raise  # abort raises; this keeps the type checker and a fake context honest

    async def fetch(self, request: csds_pb2.ClientStatusRequest, context: grpc.aio.ServicerContext[Any, Any]
                    ) -> bytes:
        visible = await self._scope(context)
        return self.respond(request, visible).SerializeToString()

    async def stream(self, requests: AsyncIterator[csds_pb2.ClientStatusRequest],
                     context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        visible = await self._scope(context)
        async for request in requests:
            yield self.respond(request, visible).SerializeToString()
