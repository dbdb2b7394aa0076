"""Shared fixtures: process groups stopped by PID at the end of a test (or module), and failure reports
that carry the output tail of every process alive during the failed test. See tests/harness.py."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.harness import ProcessGroup, all_processes


@contextlib.contextmanager
def _group(log_dir: Path) -> Iterator[ProcessGroup]:
    group = ProcessGroup(log_dir)
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture
def processes(tmp_path: Path) -> Generator[ProcessGroup, None, None]:
    """Processes that live for one test."""
    with _group(tmp_path / "logs") as group:
        yield group


@pytest.fixture(scope="module")
def module_processes(tmp_path_factory: pytest.TempPathFactory,
                     request: pytest.FixtureRequest) -> Generator[ProcessGroup, None, None]:
    """Processes shared by the tests of one module (e.g. one real Envoy per module)."""
    short = request.module.__name__.rpartition(".")[2]
    with _group(tmp_path_factory.mktemp(f"{short}-logs")) as group:
        yield group


_TEST_START = pytest.StashKey[float]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_TEST_START] = time.monotonic()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, add the output tail of every process that was alive during the test."""
    report = yield
    if report.failed:
        now = time.monotonic()
        started = item.stash.get(_TEST_START, now - call.duration)
        for process in all_processes():
            if process.started_at <= now and (process.stopped_at is None or process.stopped_at >= started):
                report.sections.append((f"process {process.name} (pid {process.pid})", process.report()))
    return report
