"""State-of-the-world xDS for one stream: a pure state machine (requests and snapshots in, responses out).

Rules (envoyproxy.io, "xDS REST and gRPC protocol"; the bugs in xds-pitfalls.md):
- CDS and LDS are wildcard when their first request names nothing; EDS and RDS are named.
- A request whose nonce is not the last one sent for its type is stale and ignored entirely: a newer
  response is on its way and Envoy will answer it with its current subscription.
- ACK vs NACK is told by `error_detail`; a NACKed version is never sent again to that node.
- The first request for a type, and any request whose names changed, is answered even when nothing
  changed, and a CDS (LDS) push is always followed by EDS (RDS): Envoy warms a changed cluster (listener)
  until it receives its endpoints (routes), so staying silent would leave it warming.
- Make-before-break: clusters and endpoints that a new snapshot drops are still sent until the proxy has
  ACKed the listeners and routes of that snapshot, so no route points at a cluster Envoy no longer has.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SHORT_NAMES
from controlplane.xds.machine import StreamMachine
from controlplane.xds.response import Outgoing
from controlplane.xds.snapshot import Resource, Snapshot, SotwBody
from controlplane.xds.status import StreamStatus

log = logging.getLogger(__name__)

WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})
# a push of the key type must be followed by one of the value type (see the module docstring)
DEPENDENT = {CLUSTER: ENDPOINT, LISTENER: ROUTE}
# types whose removals wait for the routing types to settle (make-before-break)
HELD_TYPES = frozenset({CLUSTER, ENDPOINT})
ROUTING_TYPES = (LISTENER, ROUTE)


@dataclass
class _TypeState:
    requested: bool = False
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    sent: Mapping[str, Resource] = field(default_factory=dict)
    sent_version: str = ""
    sent_nonce: str = ""
    sent_snapshot: str = ""
    pending: bool = False
    force: bool = False
    nacked: set[str] = field(default_factory=set)
    retained: dict[str, Resource] = field(default_factory=dict)


class SotwState(StreamMachine[_TypeState]):
    def __init__(
        self,
        status: StreamStatus,
        snapshot: Snapshot,
        next_nonce: Callable[[], str],
        fixed_type: str | None = None,
    ) -> None:
        super().__init__(status, snapshot, next_nonce, fixed_type, _TypeState)

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> list[Outgoing]:
        type_url = self._type_of(request.type_url, "SotW")
        if type_url is None:
            return []
        state = self._types[type_url]
        # a nonce on a type's first request is left from an earlier stream: nothing here to ACK
        if request.response_nonce and state.requested:
            if request.response_nonce != state.sent_nonce:
                log.debug("node %s: stale nonce %s for %s", self.status.node_id, request.response_nonce,
                          SHORT_NAMES[type_url])
                return []
            self._on_reply(type_url, state, request)
        first = not state.requested
        state.requested = True
        names = frozenset(request.resource_names)
        wildcard = "*" in names or (
            type_url in WILDCARD_TYPES and not names and (first or state.wildcard)
        )
        if "*" in names:
            names = names - {"*"}
        names_changed = (wildcard, names) != (state.wildcard, state.names)
        if names_changed:
            # thousands of streams subscribe to the same names: keep one copy of the set
            state.wildcard, state.names = wildcard, self.snapshot.shared_names(names)
        out: list[Outgoing] = []
        if first or names_changed:
            # On a reconnect Envoy names the version it runs; a version it rejected before is not re-sent.
            out += self._respond(type_url, must=True, held=request.version_info if first else "")
        return out + self._settle()

    def on_snapshot(self, snapshot: Snapshot) -> list[Outgoing]:
        self._use(snapshot)
        out: list[Outgoing] = []
        for type_url in PUSH_ORDER:
            out += self._respond(type_url, must=False)
        return out + self._settle()

    def _on_reply(self, type_url: str, state: _TypeState, request: discovery_pb2.DiscoveryRequest) -> None:
        state.pending = False
        if request.HasField("error_detail"):
            state.nacked.add(state.sent_version)
            # Envoy's NACK names the version it keeps running (empty: none)
            self.status.remember_nack(type_url, request.version_info, state.sent_version)
            error = request.error_detail.message
            origins = tuple(str(o) for o in self.snapshot.blame(type_url, error))
            self.status.nacked(type_url, state.sent_version, error, origins)
            log.warning("node %s NACKed %s version %s: %s", self.status.node_id, SHORT_NAMES[type_url],
                        state.sent_version, request.error_detail.message)
        else:
            self.status.acked(type_url, request.version_info)

    def _settled(self) -> bool:
        """The proxy has ACKed listeners and routes of the current snapshot."""
        for type_url in ROUTING_TYPES:
            state = self._types[type_url]
            if state.requested and (state.pending or state.sent_snapshot != self.snapshot.version):
                return False
        return True

    def _settle(self) -> list[Outgoing]:
        out: list[Outgoing] = []
        if not self._settled():
            return out
        for type_url in sorted(HELD_TYPES, key=PUSH_ORDER.index):
            state = self._types[type_url]
            if state.retained:
                state.retained = {}
                out += self._respond(type_url, must=False)
        return out

    def _select(self, type_url: str, state: _TypeState) -> SotwBody:
        body = self.snapshot.sotw_body(type_url, None if state.wildcard else state.names)
        if type_url not in HELD_TYPES:
            return body
        if self._settled():
            state.retained = {}
            return body
        for name, resource in state.sent.items():
            if name not in body.resources and (state.wildcard or name in state.names):
                state.retained.setdefault(name, resource)
        state.retained = {n: r for n, r in state.retained.items() if n not in body.resources}
        if not state.retained:
            return body
        return SotwBody.of({**state.retained, **body.resources})

    def _respond(self, type_url: str, *, must: bool, held: str = "") -> list[Outgoing]:
        """`held`: on a stream's first request, the version the reconnecting proxy runs."""
        state = self._types[type_url]
        if not state.requested:
            return []
        body = self._select(type_url, state)
        version = body.version
        rejected = version in state.nacked or self.status.rejected_before(type_url, held, version)
        if not (must or state.force):
            if version == state.sent_version:
                state.sent_snapshot = self.snapshot.version
                self.status.in_sync(type_url, self.snapshot.version)
                return []
            if rejected:
                return []
        elif rejected and (held or not must):
            return []
        nonce = self._next_nonce()
        header = discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce)
        payload = header.SerializeToString() + body.payload
        state.sent, state.sent_version, state.sent_nonce = body.resources, version, nonce
        state.sent_snapshot, state.pending, state.force = self.snapshot.version, True, False
        self.status.sent(type_url, version, nonce, len(payload), self.snapshot.version)
        dependent = DEPENDENT.get(type_url)
        if dependent is not None:
            self._types[dependent].force = self._types[dependent].requested
        return [Outgoing(type_url, payload, version, nonce, body.names)]
