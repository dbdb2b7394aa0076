"""`controlplane validate FILE|DIR|-`: check policy the way `istioctl analyze` does, without a cluster.

Prints every diagnostic (errors in the `file:line: Kind/name: field: message` form, warnings and infos
prefixed with their severity and code, see api/diagnostics.py) or, with `-o json`, one JSON document for
tools. Exit status: 0 when nothing reaches `--fail-on` (default `error`: warnings pass, as Istio applies
those objects), 1 when something does, 2 when the input cannot be read at all. `-` reads one YAML stream
from stdin (named `<stdin>` in diagnostics).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from controlplane.api.diagnostics import ERROR, INFO, WARNING, Diagnostic
from controlplane.api.loader import load_policy_dir, load_policy_texts
from controlplane.api.policyset import PolicySet

STDIN = "-"
STDIN_NAME = "<stdin>"
# --fail-on LEVEL fails on diagnostics of that severity or worse.
FAIL_ON = {"error": (ERROR,), "warning": (ERROR, WARNING), "info": (ERROR, WARNING, INFO)}


def load(target: str, stdin: TextIO) -> tuple[PolicySet, list[Diagnostic]] | None:
    """The policy and diagnostics of a file, a directory or stdin; None when `target` does not exist."""
    if target == STDIN:
        return load_policy_texts([(STDIN_NAME, stdin.read())])
    path = Path(target)
    if not path.exists():
        return None
    return load_policy_dir(path)


def run(target: str, fail_on: str, output: str, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    loaded = load(target, stdin)
    if loaded is None:
        print(f"controlplane: {target}: no such file or directory", file=stderr)
        return 2
    policy, diagnostics = loaded
    counts = {sev: sum(d.severity == sev for d in diagnostics) for sev in (ERROR, WARNING, INFO)}
    failed = any(d.severity in FAIL_ON[fail_on] for d in diagnostics)
    if output == "json":
        document = {
            "target": target,
            "objects": len(policy),
            "counts": {severity.lower(): count for severity, count in counts.items()},
            "diagnostics": [d.as_json() for d in diagnostics],
            "ok": not failed,
        }
        json.dump(document, stdout, indent=2)
        stdout.write("\n")
    else:
        for diagnostic in diagnostics:
            print(diagnostic, file=stdout)
        summary = ", ".join(f"{count} {severity.lower()}{'s' if count != 1 else ''}"
                            for severity, count in counts.items())
        print(f"{target}: {len(policy)} objects applied; {summary}", file=stderr)
    return 1 if failed else 0


def main(target: str, fail_on: str, output: str) -> int:
    return run(target, fail_on, output, sys.stdin, sys.stdout, sys.stderr)
