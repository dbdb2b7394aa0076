"""A cap on response bytes being written at once, across every stream.

Resources are serialized once and shared, but each response is one bytes object per stream (grpc needs a
contiguous message), so pushing a 3 MB config to a thousand proxies at once would hold 3 GB. Streams
wait for room instead; a response larger than the whole budget still goes out alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

DEFAULT_BUDGET = 128 * 1024 * 1024


class WriteBudget:
    def __init__(self, limit: int = DEFAULT_BUDGET) -> None:
        self.limit = limit
        self.in_flight = 0
        self._room = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        async with self._room:
            await self._room.wait_for(lambda: self.in_flight == 0 or self.in_flight + size <= self.limit)
            self.in_flight += size
        try:
            yield
        finally:
            async with self._room:
                self.in_flight -= size
                self._room.notify_all()
