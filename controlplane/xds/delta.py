"""Incremental (delta) xDS for one stream: a pure state machine (requests and snapshots in, responses out).

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

Cost per push is proportional to what changed, not to the snapshot (see `_candidates`): after each scan
the client's view is stored against the snapshot's shared layer (xds/known.py), and the next scan looks
only at names that can differ: those the layers' cached diff names, the shapes' own resources, and this
stream's deviations, pending resends and NACK-blocked names. Anything that changes the view wholesale (a
type's first request, subscriptions, a NACK) makes the next scan full.
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SHORT_NAMES
from controlplane.xds.known import Known
from controlplane.xds.layers import Layer, Layered, changed_between
from controlplane.xds.machine import StreamMachine
from controlplane.xds.response import Outgoing
from controlplane.xds.snapshot import Resource, Snapshot
from controlplane.xds.status import StreamStatus

log = logging.getLogger(__name__)

HELD_TYPES = (CLUSTER, ENDPOINT)
ROUTING_TYPES = (LISTENER, ROUTE)
# unanswered responses remembered per type; an Envoy ACKs in order, so a few suffice
MAX_PENDING = 64


class _Names(frozenset[str]):
    """A subscription set; a subclass so the intern table can hold it weakly."""


# one instance per distinct subscription: five hundred sidecars that subscribe to the same thousand
# endpoints share one set (by the set's hash; a collision just goes uninterned)
_INTERNED: weakref.WeakValueDictionary[int, _Names] = weakref.WeakValueDictionary()
_NO_NAMES = _Names()


def _intern(names: Iterable[str]) -> _Names:
    made = _Names(names)
    if not made:
        return _NO_NAMES
    found = _INTERNED.get(hash(made))
    if found is not None and found == made:
        return found
    # the strings too: each stream's request brings its own copies of the same names
    made = _Names(sys.intern(name) for name in made)
    _INTERNED[hash(made)] = made
    return made


@dataclass(slots=True)
class _Sent:
    snapshot_version: str
    # name -> (version sent, version the client had before)
    versions: dict[str, tuple[str, str | None]]
    # an initial wildcard response: also every resource of this layer, none held before
    layer: Layer | None = None

    def items(self) -> Iterator[tuple[str, tuple[str, str | None]]]:
        yield from self.versions.items()
        if self.layer is not None:
            for name, resource in self.layer.resources.items():
                yield name, (resource.version, None)


@dataclass(slots=True)
class _TypeState:
    started: bool = False
    wildcard: bool = False
    names: frozenset[str] = _NO_NAMES
    known: Known = field(default_factory=Known)
    absent: set[str] = field(default_factory=set)
    resend: set[str] = field(default_factory=set)
    nacked: set[tuple[str, str]] = field(default_factory=set)
    # the first response of the stream is being made: NACKs of earlier streams apply (nackmemory.py)
    reconnecting: bool = False
    pending: OrderedDict[str, _Sent] = field(default_factory=OrderedDict)
    synced_snapshot: str = ""
    # removals held back for make-before-break
    held: bool = False
    # the next scan looks at every name (the client's view or the scope changed other than by a push)
    full: bool = True
    # what the last scan saw: the snapshot's layer, and the names a NACK held back
    scanned_layer: Layer | None = None
    blocked: frozenset[str] = frozenset()

    def in_scope(self, name: str) -> bool:
        return self.wildcard or name in self.names


@dataclass(slots=True)
class _Changes:
    send: dict[str, Resource]
    removed: list[str]
    blocked: bool
    # the whole layer is sent too (an initial wildcard response)
    layer: Layer | None = None


def _split(current: Mapping[str, Resource]) -> tuple[Layer | None, Mapping[str, Resource]]:
    if isinstance(current, Layered):
        return current.shared, current.own
    return None, current


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
            state.known = Known(dict(request.initial_resource_versions))
            state.reconnecting = bool(state.known)
            must = True
            # legacy wildcard: a first request that subscribes to nothing
            state.wildcard = not request.resource_names_subscribe
        if request.resource_names_subscribe or request.resource_names_unsubscribe:
            self._subscribe(state, request)
        if touched:
            state.full = True
        out = self._respond(type_url, must=must) if touched else []
        if out and type_url in (CLUSTER, LISTENER):
            out += self._respond(ENDPOINT if type_url == CLUSTER else ROUTE, must=False)
        return out + self._settle()

    @staticmethod
    def _subscribe(state: _TypeState, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        # set operations, not a loop: a sidecar's first EDS request names every one of 1,000 clusters
        names = set(request.resource_names_subscribe)
        if "*" in names:
            state.wildcard = True
            names.discard("*")
        names |= state.names
        for name in request.resource_names_unsubscribe:
            if name == "*":
                state.wildcard = False
            else:
                names.discard(name)
                state.absent.discard(name)
                if not state.wildcard:
                    state.known.discard(name)
        state.names = _intern(names)

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
        names = []
        for name, (version, previous) in sent.items():
            names.append(name)
            state.nacked.add((name, version))
            if previous is not None:
                self.status.remember_nack(type_url, f"{name}@{previous}", version)
            if state.known.get(name) == version:
                if previous is None:
                    state.known.discard(name)
                else:
                    state.known.set(name, previous)
        error = request.error_detail.message
        origins = {str(o) for name in names for o in self.snapshot.origins_of(type_url, name)}
        self.status.nacked(type_url, sent.snapshot_version, error, tuple(sorted(origins)),
                           tuple(sorted(names)))
        log.warning("node %s NACKed %s %s: %s", self.status.node_id, SHORT_NAMES[type_url],
                    ",".join(sorted(names)), request.error_detail.message)
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

    def _candidates(self, state: _TypeState, current: Mapping[str, Resource]) -> Iterable[str]:
        """The names whose outcome can differ from the last scan's; all of them on a full scan."""
        layer, own = _split(current)
        if state.full:
            if not state.wildcard:
                return state.names  # nothing outside the subscription is sent or removed
            return set(current).union(state.known, state.names)
        # Since the last scan only the snapshot changed. That scan left every in-scope name the client
        # holds or should hold either equal to the snapshot, held back by a NACK (`blocked`), marked for
        # resend, or, not being in the layer, in the view's overlay. So a name outside these sets has the
        # same resource as then (own resources of the scanned snapshot that are gone are in the overlay
        # or `blocked`) and needs nothing.
        return changed_between(state.scanned_layer, layer).union(
            own, state.known.overlay, state.resend, state.blocked)

    def _changes(self, type_url: str, state: _TypeState) -> _Changes:
        """What to send, what to remove, and whether some change is held back by a NACK."""
        current = self.snapshot.of_type(type_url)
        reconnecting, state.reconnecting = state.reconnecting, False
        layer, own = _split(current)
        if state.full and layer is not None and layer.resources and not state.known and not state.nacked \
                and (state.wildcard or layer.all_names() <= state.names):
            # an initial subscription to the whole layer (a wildcard, or a sidecar's EDS names): all of it
            # in scope goes, the layer's bytes pre-joined
            missing = sorted(state.names.difference(layer.resources, own, state.absent))
            state.blocked = frozenset()
            mine = {name: r for name, r in own.items() if state.in_scope(name)}
            return _Changes(mine, missing, False, layer)
        send: dict[str, Resource] = {}
        blocked: set[str] = set()
        gone: list[str] = []
        missing = []
        for name in sorted(self._candidates(state, current)):
            resource = current.get(name)
            if resource is None:
                if name in state.known and state.in_scope(name):
                    gone.append(name)
                elif name in state.names and name not in state.absent:
                    missing.append(name)
                continue
            if not state.in_scope(name):
                continue
            held = state.known.get(name)
            if held == resource.version and name not in state.resend:
                continue
            if (state.nacked and (name, resource.version) in state.nacked) or (
                reconnecting and held is not None
                and self.status.rejected_before(type_url, f"{name}@{held}", resource.version)
            ):
                blocked.add(name)
                continue
            send[name] = resource
        state.blocked = frozenset(blocked) if blocked else frozenset()
        removed: list[str] = []
        if type_url not in HELD_TYPES or self._settled():
            removed = gone
        elif gone:
            state.held = True  # sent by _settle() once listeners and routes are ACKed
        return _Changes(send, removed + missing, bool(blocked))

    def _respond(self, type_url: str, *, must: bool) -> list[Outgoing]:
        state = self._types[type_url]
        if not state.started:
            return []
        changes = self._changes(type_url, state)
        send, removed, blocked = changes.send, changes.removed, changes.blocked
        if not blocked:
            state.synced_snapshot = self.snapshot.version
        if not send and not removed and not must and changes.layer is None:
            self._scanned(type_url, state)
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
        if changes.layer is not None:
            body = changes.layer.delta_payload(send)
            # not tuple(current): a Layered keeps the merged names it iterates, per shape
            names = tuple(sorted((*changes.layer.names, *send)))
        else:
            body = b"".join(r.delta_field for r in ordered)
            names = tuple(r.name for r in ordered)
        payload = header.SerializeToString() + body
        versions = {r.name: (r.version, state.known.get(r.name)) for r in ordered}
        state.pending[nonce] = _Sent(self.snapshot.version, versions, changes.layer)
        while len(state.pending) > MAX_PENDING:
            state.pending.popitem(last=False)
        if changes.layer is not None:
            layer = changes.layer
            state.known.adopt(layer, ((r.name, r.version) for r in ordered))
            state.resend = {n for n in state.resend if n not in layer.resources}
            state.absent = {n for n in state.absent if n not in layer.resources}
        for resource in ordered:
            state.known.set(resource.name, resource.version)
            state.resend.discard(resource.name)
            state.absent.discard(resource.name)
        for name in removed:
            # once told, the client knows it is gone; say it again only after it comes back
            state.known.discard(name)
            state.absent.add(name)
        self._resend_dependents(type_url, [r.name for r in ordered if versions[r.name][1] is not None])
        self._scanned(type_url, state)
        self.status.sent(type_url, self.snapshot.version, nonce, len(payload), self.snapshot.version)
        return [Outgoing(type_url, payload, self.snapshot.version, nonce, names, tuple(removed))]

    def _scanned(self, type_url: str, state: _TypeState) -> None:
        """Remember what this scan saw, and store the client's view against the snapshot's layer when
        that is the small form (wildcard, or a subscription to most of the layer)."""
        layer, _ = _split(self.snapshot.of_type(type_url))
        state.full = False
        state.scanned_layer = layer
        small = layer is not None and (state.wildcard or 2 * len(state.names) >= len(layer.resources))
        state.known.rebase(layer if small else None)

    def _resend_dependents(self, type_url: str, updated: list[str]) -> None:
        """An updated cluster (listener) warms until it gets its endpoints (routes): send them again."""
        if type_url == CLUSTER:
            eds = self._types[ENDPOINT]
            eds.resend |= {self.snapshot.eds_names[n] for n in updated if n in self.snapshot.eds_names}
        elif type_url == LISTENER:
            rds = self._types[ROUTE]
            for name in updated:
                rds.resend |= set(self.snapshot.rds_names.get(name, ()))
