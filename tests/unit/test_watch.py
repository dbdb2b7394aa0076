"""PolicyWatcher: bursts of file events become one reload; every kind of change is seen; non-policy
files are ignored."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from controlplane.watch import PolicyWatcher


class Recorder:
    def __init__(self) -> None:
        self.calls: list[float] = []
        self.event = asyncio.Event()

    def __call__(self, first_event_at: float) -> None:
        self.calls.append(first_event_at)
        self.event.set()

    async def next(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()


@pytest_asyncio.fixture
async def watched(tmp_path: Path) -> AsyncIterator[tuple[Path, Recorder]]:
    recorder = Recorder()
    watcher = PolicyWatcher(tmp_path, recorder, quiet=0.1, max_delay=1.0)
    task = asyncio.create_task(watcher.run())
    await asyncio.sleep(0.3)  # let the OS watch start before the test writes
    yield tmp_path, recorder
    watcher.stop()
    await asyncio.wait_for(task, 5)


@pytest.mark.asyncio
async def test_burst_of_edits_is_one_reload(watched: tuple[Path, Recorder]) -> None:
    root, recorder = watched
    for i in range(10):
        (root / f"f{i}.yaml").write_text(f"# {i}\n")
    await recorder.next()
    await asyncio.sleep(0.4)
    assert len(recorder.calls) == 1


@pytest.mark.asyncio
async def test_atomic_save_new_deleted_and_subdirectory(watched: tuple[Path, Recorder]) -> None:
    root, recorder = watched
    (root / "a.yaml").write_text("a: 1\n")
    await recorder.next()
    temp = root / ".a.yaml.swp"
    temp.write_text("a: 2\n")
    os.replace(temp, root / "a.yaml")  # an editor's atomic save
    await recorder.next()
    (root / "sub").mkdir()
    (root / "sub" / "b.yml").write_text("b: 1\n")
    await recorder.next()
    (root / "a.yaml").unlink()
    await recorder.next()
    assert len(recorder.calls) == 4


@pytest.mark.asyncio
async def test_non_policy_files_do_not_reload(watched: tuple[Path, Recorder]) -> None:
    root, recorder = watched
    (root / "server.log").write_text("log line\n")
    (root / ".hidden.yaml").write_text("x: 1\n")
    with pytest.raises(TimeoutError):
        await recorder.next(timeout=0.6)
    assert recorder.calls == []
