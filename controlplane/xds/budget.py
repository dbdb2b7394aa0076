"""A cap on response bytes sent to proxies and not yet acknowledged, across every stream.

Resources are serialized once and shared, but each response is one bytes object per stream (grpc needs a
contiguous message) and stays in grpc's buffers until the proxy has read it. Pushing a 3 MB config to a
thousand proxies at once would hold 3 GB. A stream takes room before writing a response and gives it
back when the proxy's next request of that type arrives (its ACK or NACK: the bytes have been read).

The cap is soft: a stream that waited `patience` seconds writes anyway, so proxies that never answer
cannot stall everyone else, and a response larger than the whole budget goes out when nothing else is
in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

DEFAULT_BUDGET = 256 * 1024 * 1024
DEFAULT_PATIENCE = 5.0


class WriteBudget:
    def __init__(self, limit: int = DEFAULT_BUDGET, patience: float = DEFAULT_PATIENCE) -> None:
        self.limit = limit
        self.patience = patience
        self.in_flight = 0
        self._released = asyncio.Event()

    def _fits(self, size: int) -> bool:
        return self.in_flight == 0 or self.in_flight + size <= self.limit

    async def acquire(self, size: int) -> None:
        deadline = time.monotonic() + self.patience
        while not self._fits(size):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._released.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), remaining)
        self.in_flight += size

    def release(self, size: int) -> None:
        if size:
            self.in_flight = max(0, self.in_flight - size)
            self._released.set()
