"""Fixtures: the real xDS gRPC server in-process on 127.0.0.1:0 (see harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from xds_harness import Harness


@pytest_asyncio.fixture
async def xds() -> AsyncIterator[Harness]:
    harness = Harness()
    await harness.start()
    try:
        yield harness
    finally:
        await harness.close()


@pytest_asyncio.fixture
async def xds2() -> AsyncIterator[Harness]:
    """A second, independent server with its own cache (a replica)."""
    harness = Harness()
    await harness.start()
    try:
        yield harness
    finally:
        await harness.close()
