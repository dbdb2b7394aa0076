"""Golden tests: policy in `testdata/in/<case>.yaml` → Envoy resources in `testdata/out/<case>.*.json`.

A difference fails the test and shows the diff; after an intended change, regenerate with
`pytest tests/golden --update-golden` (or `make golden`) and review the diff of testdata/out.
"""

from __future__ import annotations

import pytest
from golden import IN, OUT, OUTPUT_KINDS, cases, render


@pytest.mark.parametrize("case", cases())
def test_golden(case: str, update_golden: bool) -> None:
    rendered = render(case)
    if update_golden:
        OUT.mkdir(parents=True, exist_ok=True)
        for name, content in rendered.items():
            (OUT / name).write_text(content, encoding="utf-8")
        return
    for name, content in rendered.items():
        path = OUT / name
        assert path.exists(), f"missing golden file {path}; run pytest tests/golden --update-golden"
        assert path.read_text(encoding="utf-8") == content, f"stale golden file {path}"


def test_no_orphaned_golden_files(update_golden: bool) -> None:
    """Every output file belongs to an input case (a renamed or deleted case must take its goldens along)."""
    expected = {
        f"{case}.{kind}.{'txt' if kind == 'diagnostics' else 'json'}"
        for case in cases()
        for kind in OUTPUT_KINDS
    }
    orphans = sorted(path.name for path in OUT.iterdir() if path.name not in expected)
    if update_golden:
        for name in orphans:
            (OUT / name).unlink()
        return
    assert not orphans, f"golden files without an input case in {IN}: {orphans}"
