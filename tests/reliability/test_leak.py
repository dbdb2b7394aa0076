"""The leak check of bench/reliability_leak.py, shortened: connect / subscribe / NACK / disconnect cycles
(a new node id each) against a real `controlplane serve`; its RSS must stay flat (< 5 MB of growth; the
benchmark's 10,000-cycle figure is in bench/results/reliability.md)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import reliability_leak  # noqa: E402


def test_cycles_leave_the_server_rss_flat(tmp_path: Path) -> None:
    figures = reliability_leak.run(cycles=1_500, warmup=300, log=tmp_path / "server.log")
    assert figures["cycles"] == 1_500
    assert figures["growth_mb"] * 2**20 < reliability_leak.LIMIT_BYTES, figures
