"""The policy's state as `/debug/config` reports it and `controlplane status` shows it: every problem with
its severity, and whether what is served is the latest edit (a file with errors keeps its last valid
version, or is left out, so the proxies can be SYNCED on an older config than the one on disk).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controlplane.api.diagnostics import Diagnostic
from controlplane.policystore import LoadResult

ERROR, WARNING, INFO = "error", "warning", "info"


def severity_of(diagnostic: Diagnostic) -> str:
    """The diagnostic's severity in lower case (api/diagnostics.py: Error, Warning, Info)."""
    severity = diagnostic.severity.lower()
    return severity if severity in (WARNING, INFO) else ERROR


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def policy_state(diagnostics: Sequence[Diagnostic], loaded: LoadResult | None) -> dict[str, Any]:
    kept = list(loaded.kept) if loaded is not None else []
    excluded = list(loaded.excluded) if loaded is not None else []
    return {
        "problems": [
            {"file": d.file, "line": d.line, "severity": severity_of(d), "text": str(d)} for d in diagnostics
        ],
        "errors": sum(1 for d in diagnostics if severity_of(d) == ERROR),
        "warnings": sum(1 for d in diagnostics if severity_of(d) == WARNING),
        # every file on disk is served as it is now
        "latest_edit_served": loaded is not None and not kept and not excluded,
        "kept_last_valid": kept,
        "not_applied": excluded,
    }
