"""The reliability suite reuses the integration tests' scripted ADS client and in-process server."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from xds_harness import Harness


@pytest_asyncio.fixture
async def xds() -> AsyncIterator[Harness]:
    harness = Harness()
    await harness.start()
    try:
        yield harness
    finally:
        await harness.close()
