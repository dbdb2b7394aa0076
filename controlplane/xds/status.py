"""What each connected proxy has been sent, what it ACKed and what it rejected (for /debug/syncz).

Also holds the NACK memory that carries rejections over a reconnect (xds/nackmemory.py: bounded, expiring,
keyed by what the proxy holds, so a stranger cannot poison another proxy).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controlplane.model.identity import ProxyIdentity
from controlplane.translate.resources import PUSH_ORDER, SHORT_NAMES
from controlplane.xds import metrics
from controlplane.xds.nackmemory import NackMemory, memory_key

SYNCED, STALE, NACKED = "SYNCED", "STALE", "NACKED"


@dataclass
class TypeStatus:
    sent_version: str = ""
    sent_nonce: str = ""
    sent_at: float | None = None
    responses: int = 0
    acked_version: str = ""
    acked_at: float | None = None
    nacked_version: str = ""
    nack_error: str = ""
    nack_origins: tuple[str, ...] = ()
    # delta: the resources of the rejected response
    nacked_resources: tuple[str, ...] = ()
    # version of the snapshot the last response was cut from; SYNCED means the proxy ACKed it
    snapshot_version: str = ""

    def state(self, current_snapshot: str) -> str:
        if self.nack_error and self.nacked_version == self.sent_version:
            return NACKED
        if self.acked_version == self.sent_version and self.snapshot_version == current_snapshot:
            return SYNCED
        return STALE


@dataclass
class StreamStatus:
    stream_id: int
    node_id: str
    identity: ProxyIdentity
    protocol: str
    connected_at: float = field(default_factory=time.time)
    # the envoy.config.core.v3.Node the proxy sent (for CSDS)
    node: Any = None
    # who the proxy proved to be (its token's SPIFFE id; "" when xDS authentication is off)
    principal: str = ""
    snapshot_version: str = ""
    # time.monotonic() of the policy change behind the current snapshot (0: unknown)
    snapshot_changed_at: float = 0.0
    types: dict[str, TypeStatus] = field(default_factory=dict)
    _registry: StatusRegistry | None = field(default=None, repr=False)
    _converged: str = field(default="", repr=False)

    def use_snapshot(self, version: str, changed_at: float, *, initial: bool = False) -> None:
        self.snapshot_version, self.snapshot_changed_at = version, changed_at
        if initial:
            # a proxy's first sync measures its connection, not a policy change's convergence
            self._converged = version

    def in_sync(self, type_url: str, snapshot_version: str, *, delta: bool = False) -> None:
        """The proxy's copy of this type already equals the snapshot's: nothing had to be sent.

        Delta: no ACK follows when nothing is sent, so this is recorded as ACKed here — an up-to-date proxy
        that reconnected, or one whose NACKed resources have left the snapshot."""
        if type_url not in self.types and not delta:
            return
        status = self.of(type_url)
        status.snapshot_version = snapshot_version
        if delta:
            status.sent_version = status.acked_version = snapshot_version
            status.nacked_version = status.nack_error = ""
            status.nack_origins = status.nacked_resources = ()
        self._check_converged()

    def _check_converged(self) -> None:
        version = self.snapshot_version
        if not self.types or self._converged == version:
            return
        if all(s.state(version) == SYNCED for s in self.types.values()):
            self._converged = version
            if self.snapshot_changed_at:
                metrics.CONVERGENCE.observe(max(0.0, time.monotonic() - self.snapshot_changed_at))

    def of(self, type_url: str) -> TypeStatus:
        status = self.types.get(type_url)
        if status is None:
            status = self.types[type_url] = TypeStatus()
            metrics.SUBSCRIBED.labels(SHORT_NAMES.get(type_url, type_url), self.identity.role.value).inc()
        return status

    def sent(self, type_url: str, version: str, nonce: str, size: int, snapshot_version: str) -> None:
        status = self.of(type_url)
        status.sent_version, status.sent_nonce, status.sent_at = version, nonce, time.time()
        status.snapshot_version = snapshot_version
        status.responses += 1
        short = SHORT_NAMES.get(type_url, type_url)
        metrics.PUSHES.labels(short).inc()
        metrics.PUSHED_BYTES.labels(short).inc(size)

    def acked(self, type_url: str, version: str) -> None:
        status = self.of(type_url)
        status.acked_version, status.acked_at = version, time.time()
        status.nack_error = status.nacked_version = ""
        status.nack_origins = status.nacked_resources = ()
        self._check_converged()

    def nacked(self, type_url: str, version: str, error: str, origins: tuple[str, ...] = (),
               resources: tuple[str, ...] = ()) -> None:
        status = self.of(type_url)
        status.nacked_version, status.nack_error, status.nack_origins = version, error, origins
        status.nacked_resources = resources
        metrics.NACKS.labels(SHORT_NAMES.get(type_url, type_url)).inc()

    @property
    def shape(self) -> str:
        return self.identity.describe()

    def remember_nack(self, type_url: str, held: str, rejected: str) -> None:
        """Holding `held` (a version, or delta's `name@version`), the proxy rejected `rejected`: carry
        that over a reconnect (xds/nackmemory.py). Nothing is remembered for a proxy that held nothing."""
        if self._registry is not None and held:
            self._registry.nacks.remember(memory_key(self), type_url, held, rejected)

    def rejected_before(self, type_url: str, held: str, offered: str) -> bool:
        """Whether this proxy, reconnecting while holding `held`, rejected `offered` on an earlier stream."""
        return bool(held) and self._registry is not None and self._registry.nacks.rejected(
            memory_key(self), type_url, held, offered)

    @property
    def envoy_version(self) -> str:
        """The Envoy build the proxy reports (node.user_agent_build_version), e.g. "1.40.0"; "" if none."""
        node = self.node
        if node is None or not node.HasField("user_agent_build_version"):
            return ""
        version = node.user_agent_build_version.version
        return f"{version.major_number}.{version.minor_number}.{version.patch}"

    def to_json(
        self,
        current_version: str | None = None,
        type_versions: Mapping[str, str] | None = None,
        required: Collection[str] = (),
    ) -> dict[str, Any]:
        """`current_version`: the shape's snapshot in the cache now, which the stream may not have
        caught up with yet (then it is STALE). `type_versions`: that snapshot's version per type (short
        name), shown for the SYNCED types of a delta stream, whose ACKs carry the snapshot's version.
        `required`: the type URLs the proxy must have subscribed to before it counts as synced (see
        Snapshot.required_types: an Envoy that ACKed its clusters has not yet asked for the rest)."""
        current = current_version or self.snapshot_version
        return {
            "stream": self.stream_id,
            "node": self.node_id,
            "proxy": self.identity.describe(),
            "protocol": self.protocol,
            "envoy_version": self.envoy_version,
            "connected_at": self.connected_at,
            "connected_since": datetime.fromtimestamp(self.connected_at, UTC).isoformat(timespec="seconds"),
            "snapshot_version": self.snapshot_version,
            "current_snapshot_version": current,
            "synced": bool(self.types) and all(t in self.types for t in required)
            and all(s.state(current) == SYNCED for s in self.types.values()),
            "types": {
                SHORT_NAMES.get(t, t): {
                    "state": s.state(current),
                    "version": self._type_version(t, s, current, type_versions),
                    "sent_version": s.sent_version,
                    "sent_nonce": s.sent_nonce,
                    "sent_at": s.sent_at,
                    "responses": s.responses,
                    "acked_version": s.acked_version,
                    "acked_at": s.acked_at,
                    "nacked_version": s.nacked_version,
                    "nack_error": s.nack_error,
                    "nack_origins": list(s.nack_origins),
                    "nacked_resources": list(s.nacked_resources),
                }
                for t, s in sorted(self.types.items(), key=lambda item: _order(item[0]))
            },
        }


    def _type_version(
        self, type_url: str, status: TypeStatus, current: str, type_versions: Mapping[str, str] | None
    ) -> str:
        """The version of this type the proxy runs (or was last sent), changing only when the type does.
        SotW versions are per type already; a delta stream's are the snapshot's, the same for every type,
        so a SYNCED type shows the current snapshot's version of that type instead."""
        if self.protocol != "delta":
            return status.acked_version or status.sent_version
        if type_versions is not None and status.state(current) == SYNCED:
            return type_versions.get(SHORT_NAMES.get(type_url, type_url), "")
        return ""


def _order(type_url: str) -> int:
    return PUSH_ORDER.index(type_url) if type_url in PUSH_ORDER else len(PUSH_ORDER)


class StatusRegistry:
    """All open streams' status, plus the NACK memory carried over reconnects (xds/nackmemory.py)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.streams: dict[int, StreamStatus] = {}
        self.nacks = NackMemory()
        self.describe_identity: Callable[[StreamStatus], dict[str, Any]] | None = None

    def open(self, node_id: str, identity: ProxyIdentity, protocol: str, node: Any = None) -> StreamStatus:
        status = StreamStatus(next(self._ids), node_id, identity, protocol, node=node, _registry=self)
        self.streams[status.stream_id] = status
        metrics.CONNECTED.labels(protocol, identity.role.value).inc()
        return status

    def close(self, status: StreamStatus) -> None:
        if self.streams.pop(status.stream_id, None) is not None:
            metrics.CONNECTED.labels(status.protocol, status.identity.role.value).dec()
            role = status.identity.role.value
            for type_url in status.types:
                metrics.SUBSCRIBED.labels(SHORT_NAMES.get(type_url, type_url), role).dec()

    def by_node(self, node_id: str) -> list[StreamStatus]:
        return [s for s in self.streams.values() if s.node_id == node_id]

    def to_json(
        self,
        current: Callable[[ProxyIdentity], str] | None = None,
        type_versions: Callable[[ProxyIdentity], Mapping[str, str]] | None = None,
        required: Callable[[ProxyIdentity], Collection[str]] | None = None,
    ) -> list[dict[str, Any]]:
        out = []
        for s in sorted(self.streams.values(), key=lambda s: (s.node_id, s.stream_id)):
            entry = s.to_json(current(s.identity) if current else None,
                              type_versions(s.identity) if type_versions else None,
                              required(s.identity) if required else ())
            if self.describe_identity is not None:
                # the proxy's SPIFFE id and its certificate's serial and expiry (security/identity.py)
                entry["identity"] = self.describe_identity(s)
            out.append(entry)
        return out
