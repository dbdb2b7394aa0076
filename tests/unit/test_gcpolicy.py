"""gcpolicy: survivors are frozen (out of the collector's walks) and a full collection still finds cyclic
garbage among them."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from controlplane import gcpolicy


class _Node:
    def __init__(self) -> None:
        self.me = self


def test_full_collect_finds_frozen_cyclic_garbage() -> None:
    node = _Node()
    gone = weakref.ref(node)
    gc.freeze()
    try:
        del node
        gc.collect()
        assert gone() is not None  # frozen: the collector no longer sees it
        gcpolicy.full_collect()
        assert gone() is None
    finally:
        gc.unfreeze()


@pytest.mark.asyncio
async def test_survivors_are_frozen_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gcpolicy, "FREEZE_EVERY", 0.01)
    task = asyncio.create_task(gcpolicy.keep_collections_short())
    try:
        await asyncio.sleep(0.05)
        assert gc.get_freeze_count() > 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        gc.unfreeze()


@pytest.mark.asyncio
@pytest.mark.parametrize("full_every, expected", [(0.02, True), (3600.0, False)])
async def test_full_collection_only_when_grown_and_due(monkeypatch: pytest.MonkeyPatch, full_every: float,
                                                       expected: bool) -> None:
    monkeypatch.setattr(gcpolicy, "FREEZE_EVERY", 0.01)
    monkeypatch.setattr(gcpolicy, "FULL_EVERY", full_every)
    ran: list[int] = []
    monkeypatch.setattr(gcpolicy, "full_collect", lambda: ran.append(1) or 0)
    gc.unfreeze()
    task = asyncio.create_task(gcpolicy.keep_collections_short())
    try:
        await asyncio.sleep(0.02)
        grown = [[i] for i in range(max(gc.get_freeze_count(), 1) * 3)]  # the frozen set more than doubles
        await asyncio.sleep(0.2)
        assert bool(ran) is expected
        del grown
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        gc.unfreeze()


def test_pauses_nest_and_restore_the_collector() -> None:
    assert gc.isenabled()
    with gcpolicy.paused():
        assert not gc.isenabled()
        with gcpolicy.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()
    gc.disable()
    try:
        with gcpolicy.paused():
            pass
        assert not gc.isenabled()  # off before, off after
    finally:
        gc.enable()


def test_when_serving_what_a_pause_leaves_is_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    gc.unfreeze()
    try:
        monkeypatch.setattr(gcpolicy, "_freeze_after_pause", False)
        with gcpolicy.paused():
            kept = [[index] for index in range(1000)]
        assert gc.get_freeze_count() == 0  # not serving: nothing frozen
        monkeypatch.setattr(gcpolicy, "_freeze_after_pause", True)
        with gcpolicy.paused():
            kept += [[index] for index in range(1000)]
        assert gc.get_freeze_count() >= 2000  # the load's survivors are out of every collection's walk
        assert gc.isenabled()
    finally:
        gc.unfreeze()
