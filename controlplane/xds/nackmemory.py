"""NACK memory across reconnects: bounded, expiring, and keyed by what a proxy was sent and what it holds.

Why it exists: a proxy that rejected a version and reconnects must not get that version again at once
(the NACK loops of xds-pitfalls.md). Within one stream, each stream machine remembers its own NACKs
(that memory goes with the stream). This map carries them over a reconnect, and only there:

- an entry is (`memory_key(status)`, type URL, what the proxy held, what it rejected): "holding X, it
  rejected Y". It is consulted only for a stream's first response of a type, and only for what the
  reconnecting proxy says it holds (SotW `version_info`, delta `initial_resource_versions`). A fresh proxy
  (holding nothing) is always sent everything, so a stranger NACKing under another proxy's node id can at
  worst make that proxy keep what it already runs until the next change — never leave it with 0 clusters,
  and never hold back a push to a connected proxy;
- at most MAX_ENTRIES entries, each forgotten after TTL seconds (least recently added first): memory
  stays flat whatever clients send (on main it grew ~1.3 KB per NACKing node id, never freed).

`memory_key` is the one place that says whose memory a stream shares: the identity the stream's token
proved (xds/auth.py; empty with --insecure-xds), its node id and its proxy shape — so a stranger cannot
share a proxy's memory without that proxy's credential.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

MAX_ENTRIES = 10_000
TTL = 600.0


class _Stream(Protocol):
    node_id: str
    principal: str

    @property
    def shape(self) -> str: ...


def memory_key(stream: _Stream) -> str:
    """Whose NACK memory a stream shares with its reconnects (see the module docstring)."""
    return f"{stream.principal}\x00{stream.node_id}\x00{stream.shape}"


class NackMemory:
    def __init__(self, max_entries: int = MAX_ENTRIES, ttl: float = TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries, self.ttl, self._clock = max_entries, ttl, clock
        self._entries: OrderedDict[tuple[str, str, str, str], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, key: str, type_url: str, held: str, rejected: str) -> None:
        entry = (key, type_url, held, rejected)
        self._entries.pop(entry, None)
        self._entries[entry] = self._clock() + self.ttl
        self._expire()
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def rejected(self, key: str, type_url: str, held: str, offered: str) -> bool:
        """Whether a proxy holding `held` rejected `offered` (and the memory has not expired)."""
        expires = self._entries.get((key, type_url, held, offered))
        return expires is not None and expires > self._clock()

    def _expire(self) -> None:
        now = self._clock()
        while self._entries:
            oldest, expires = next(iter(self._entries.items()))
            if expires > now:
                return
            del self._entries[oldest]
