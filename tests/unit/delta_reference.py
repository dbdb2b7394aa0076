"""The reference delta state machine for tests/unit/test_delta_equivalence.py: xds/delta.py as it was
before its pushes became proportional to the change (every push looked at every resource of every type
and kept a name → version dict per type). Kept verbatim so the fast path is checked against it.

Rules (envoyproxy.io, "xDS REST and gRPC protocol", incremental variants; xds-pitfalls.md):
- The first request's `initial_resource_versions` says what the client already has: only what differs is
  sent. Every type's first request gets a response, possibly empty: a fresh client's initialization waits
  for it, and a reconnecting, up-to-date Envoy resets its retry backoff only when a message arrives (sent
  nothing, it was back in sync 0.4-23 s after a server restart, median 6.1 s).
- Subscriptions are deltas: `*` subscribes to the wildcard, names add or drop explicit interest, and they
  apply even when the request's nonce is stale (only its ACK/NACK meaning is stale).
- Only resources whose version differs from the client's are sent; resources it has that are gone, and
  subscribed names that do not exist, are listed in `removed_resources`.
- A NACKed (name, version) is never sent again on that stream; the client's view reverts to what it had.
  A reconnect holding the version it rejected from is not sent it at once either (xds/nackmemory.py).
- A changed cluster (listener) is followed by its endpoints (routes), even unchanged, so it never stays
  warming; removals of clusters and endpoints wait until listeners and routes settle (make-before-break).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SHORT_NAMES
from controlplane.xds.machine import StreamMachine
from controlplane.xds.response import Outgoing
from controlplane.xds.snapshot import Resource, Snapshot
from controlplane.xds.status import StreamStatus

log = logging.getLogger(__name__)

HELD_TYPES = (CLUSTER, ENDPOINT)
ROUTING_TYPES = (LISTENER, ROUTE)
# unanswered responses remembered per type; an Envoy ACKs in order, so a few suffice
MAX_PENDING = 64


@dataclass
class _Sent:
    snapshot_version: str
    # name -> (version sent, version the client had before)
    versions: dict[str, tuple[str, str | None]]


@dataclass
class _TypeState:
    started: bool = False
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    known: dict[str, str] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)
    resend: set[str] = field(default_factory=set)
    nacked: set[tuple[str, str]] = field(default_factory=set)
    # the first response of the stream is being made: NACKs of earlier streams apply (nackmemory.py)
    reconnecting: bool = False
    pending: OrderedDict[str, _Sent] = field(default_factory=OrderedDict)
    synced_snapshot: str = ""
    # removals held back for make-before-break
    held: bool = False

    def in_scope(self, name: str) -> bool:
        return self.wildcard or name in self.names


class DeltaState(StreamMachine[_TypeState]):
    def __init__(
        self,
        status: StreamStatus,
        snapshot: Snapshot,
        next_nonce: Callable[[], str],
        fixed_type: str | None = None,
    ) -> None:
        super().__init__(status, snapshot, next_nonce, fixed_type, _TypeState)

    def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> list[Outgoing]:
        type_url = self._type_of(request.type_url, "delta")
        if type_url is None:
            return []
        state = self._types[type_url]
        # a plain ACK changes nothing the diff depends on; only subscriptions, NACKs (which revert the
        # client's versions) and a type's first request do — re-diffing a whole type on every ACK made
        # pushes to many streams quadratic
        touched = bool(request.resource_names_subscribe or request.resource_names_unsubscribe)
        if request.response_nonce:
            touched |= self._on_reply(type_url, state, request)
        must = False
        if not state.started:
            touched = True
            state.started = True
            state.known = dict(request.initial_resource_versions)
            state.reconnecting = bool(state.known)
            must = True
            # legacy wildcard: a first request that subscribes to nothing
            state.wildcard = not request.resource_names_subscribe
        for name in request.resource_names_subscribe:
            if name == "*":
                state.wildcard = True
            else:
                state.names.add(name)
        for name in request.resource_names_unsubscribe:
            if name == "*":
                state.wildcard = False
            else:
                state.names.discard(name)
                state.absent.discard(name)
                if not state.wildcard:
                    state.known.pop(name, None)
        out = self._respond(type_url, must=must) if touched else []
        if out and type_url in (CLUSTER, LISTENER):
            out += self._respond(ENDPOINT if type_url == CLUSTER else ROUTE, must=False)
        return out + self._settle()

    def on_snapshot(self, snapshot: Snapshot) -> list[Outgoing]:
        self._use(snapshot)
        out: list[Outgoing] = []
        for type_url in PUSH_ORDER:
            out += self._respond(type_url, must=False)
        return out + self._settle()

    def _on_reply(self, type_url: str, state: _TypeState,
                  request: discovery_pb2.DeltaDiscoveryRequest) -> bool:
        """Record an ACK or NACK; True when it changed what the client holds (a NACK)."""
        sent = state.pending.pop(request.response_nonce, None)
        if sent is None:
            log.debug("node %s: reply to unknown nonce %s for %s", self.status.node_id,
                      request.response_nonce, SHORT_NAMES[type_url])
            return False
        if not request.HasField("error_detail"):
            self.status.acked(type_url, sent.snapshot_version)
            return False
        for name, (version, previous) in sent.versions.items():
            state.nacked.add((name, version))
            if previous is not None:
                self.status.remember_nack(type_url, f"{name}@{previous}", version)
            if state.known.get(name) == version:
                if previous is None:
                    state.known.pop(name)
                else:
                    state.known[name] = previous
        error = request.error_detail.message
        origins = {str(o) for name in sent.versions for o in self.snapshot.origins_of(type_url, name)}
        self.status.nacked(type_url, sent.snapshot_version, error, tuple(sorted(origins)),
                           tuple(sorted(sent.versions)))
        log.warning("node %s NACKed %s %s: %s", self.status.node_id, SHORT_NAMES[type_url],
                    ",".join(sorted(sent.versions)), request.error_detail.message)
        return True

    def _settled(self) -> bool:
        for type_url in ROUTING_TYPES:
            state = self._types[type_url]
            if state.started and (state.pending or state.synced_snapshot != self.snapshot.version):
                return False
        return True

    def _settle(self) -> list[Outgoing]:
        if not self._settled():
            return []
        out: list[Outgoing] = []
        for type_url in HELD_TYPES:
            state = self._types[type_url]
            if state.held:
                state.held = False
                out += self._respond(type_url, must=False)
        return out

    def _changes(self, type_url: str, state: _TypeState) -> tuple[dict[str, Resource], list[str], bool]:
        """What to send, what to remove, and whether some change is held back by a NACK."""
        current = self.snapshot.of_type(type_url)
        send: dict[str, Resource] = {}
        blocked = False
        reconnecting, state.reconnecting = state.reconnecting, False
        for name, resource in current.items():
            if not state.in_scope(name):
                continue
            held = state.known.get(name)
            if held == resource.version and name not in state.resend:
                continue
            if (state.nacked and (name, resource.version) in state.nacked) or (
                reconnecting and held is not None
                and self.status.rejected_before(type_url, f"{name}@{held}", resource.version)
            ):
                blocked = True
                continue
            send[name] = resource
        gone = [n for n in sorted(state.known) if n not in current and state.in_scope(n)]
        removed: list[str] = []
        if type_url not in HELD_TYPES or self._settled():
            removed = gone
        elif gone:
            state.held = True  # sent by _settle() once listeners and routes are ACKed
        removed += [
            n for n in sorted(state.names)
            if n not in current and n not in state.known and n not in state.absent
        ]
        return send, removed, blocked

    def _respond(self, type_url: str, *, must: bool) -> list[Outgoing]:
        state = self._types[type_url]
        if not state.started:
            return []
        send, removed, blocked = self._changes(type_url, state)
        if not blocked:
            state.synced_snapshot = self.snapshot.version
        if not send and not removed and not must:
            if not blocked:
                # nothing to send: the proxy's copy already matches this snapshot. With a response still
                # unanswered, its ACK will complete the sync; without one, no ACK will come.
                self.status.in_sync(type_url, self.snapshot.version, delta=not state.pending)
            return []
        nonce = self._next_nonce()
        header = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=self.snapshot.version, type_url=type_url, nonce=nonce,
            removed_resources=removed,
        )
        ordered = [send[name] for name in sorted(send)]
        payload = header.SerializeToString() + b"".join(r.delta_field for r in ordered)
        versions = {r.name: (r.version, state.known.get(r.name)) for r in ordered}
        state.pending[nonce] = _Sent(self.snapshot.version, versions)
        while len(state.pending) > MAX_PENDING:
            state.pending.popitem(last=False)
        for resource in ordered:
            state.known[resource.name] = resource.version
            state.resend.discard(resource.name)
            state.absent.discard(resource.name)
        for name in removed:
            # once told, the client knows it is gone; say it again only after it comes back
            state.known.pop(name, None)
            state.absent.add(name)
        self._resend_dependents(type_url, [r.name for r in ordered if versions[r.name][1] is not None])
        self.status.sent(type_url, self.snapshot.version, nonce, len(payload), self.snapshot.version)
        return [Outgoing(type_url, payload, self.snapshot.version, nonce, tuple(send), tuple(removed))]

    def _resend_dependents(self, type_url: str, updated: list[str]) -> None:
        """An updated cluster (listener) warms until it gets its endpoints (routes): send them again."""
        if type_url == CLUSTER:
            eds = self._types[ENDPOINT]
            eds.resend |= {self.snapshot.eds_names[n] for n in updated if n in self.snapshot.eds_names}
        elif type_url == LISTENER:
            rds = self._types[ROUTE]
            for name in updated:
                rds.resend |= set(self.snapshot.rds_names.get(name, ()))
