"""The local mesh keeps the previous run's logs in run/logs/prev/ (each start used to truncate them, so a
failed run's logs were gone once it was started again)."""

from __future__ import annotations

from pathlib import Path

from controlplane.mesh.runner import keep_previous_logs


def test_previous_run_is_kept_once(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    (logs / "bootstrap").mkdir(parents=True)
    (logs / "envoy-a-1.log").write_text("run 1: crashed\n")
    (logs / "mesh.json").write_text("{}")
    (logs / "bootstrap" / "a-1.yaml").write_text("node: {}\n")
    keep_previous_logs(logs)
    assert sorted(p.name for p in logs.iterdir()) == ["prev"]
    assert (logs / "prev" / "envoy-a-1.log").read_text() == "run 1: crashed\n"
    assert (logs / "prev" / "bootstrap" / "a-1.yaml").is_file()

    (logs / "envoy-a-1.log").write_text("run 2\n")
    keep_previous_logs(logs)  # the run before the previous one is dropped
    assert (logs / "prev" / "envoy-a-1.log").read_text() == "run 2\n"
    assert sorted(p.name for p in (logs / "prev").iterdir()) == ["envoy-a-1.log"]


def test_nothing_to_keep(tmp_path: Path) -> None:
    keep_previous_logs(tmp_path / "missing")
    keep_previous_logs(tmp_path)
    assert list(tmp_path.iterdir()) == []
