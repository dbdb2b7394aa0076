"""What the SotW and delta state machines share: their inputs, per-type state, and which type a request is
for (unknown types and, on per-type services, other types are logged and ignored — the spec gives no
answer for them, and a stream must survive garbage)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from controlplane.translate.resources import PUSH_ORDER
from controlplane.xds.snapshot import Snapshot
from controlplane.xds.status import StreamStatus

log = logging.getLogger(__name__)

S = TypeVar("S")


class StreamMachine(Generic[S]):
    def __init__(
        self,
        status: StreamStatus,
        snapshot: Snapshot,
        next_nonce: Callable[[], str],
        fixed_type: str | None,
        new_state: Callable[[], S],
    ) -> None:
        self.status = status
        self.snapshot = snapshot
        self._next_nonce = next_nonce
        self._fixed_type = fixed_type
        self._types: dict[str, S] = {t: new_state() for t in PUSH_ORDER}
        status.use_snapshot(snapshot.version, snapshot.changed_at, initial=True)

    def _use(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.status.use_snapshot(snapshot.version, snapshot.changed_at)

    def _type_of(self, request_type: str, protocol: str) -> str | None:
        type_url = request_type or self._fixed_type or ""
        if type_url not in self._types or (self._fixed_type and type_url != self._fixed_type):
            log.warning("node %s: ignoring a %s request for unknown or unexpected type %r",
                        self.status.node_id, protocol, type_url)
            return None
        return type_url
