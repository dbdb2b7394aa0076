"""What a stream state machine asks its driver to send: the wire bytes plus a summary for status and logs."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Outgoing:
    type_url: str
    payload: bytes  # a serialized DiscoveryResponse or DeltaDiscoveryResponse
    version: str
    nonce: str
    names: tuple[str, ...]
    removed: tuple[str, ...] = ()


def nonce_factory(stream_id: int) -> Callable[[], str]:
    """Nonces unique within the process: the stream id keeps a reconnected proxy's old nonces stale."""
    counter = itertools.count(1)
    return lambda: f"{stream_id}-{next(counter)}"
