"""The policy directory as served: what is on disk, minus edits that do not validate.

A file with any problem is never half-applied. If an earlier version of it was valid, that version stays
in effect (an invalid edit changes nothing that is served); a file that was never valid is left out (at
startup the valid files are served). Deleting a file is a valid edit. The diagnostics always describe the
files as they are on disk, so the user sees what to fix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.api.diagnostics import UNKNOWN, Diagnostic
from controlplane.api.loader import load_policy_texts, policy_files
from controlplane.api.policyset import PolicySet

log = logging.getLogger(__name__)

# Policy files are hand-written; anything bigger is a mistake (a log or a dump saved into the directory),
# and parsing it would stall every proxy's pushes.
MAX_FILE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class LoadResult:
    policy: PolicySet
    diagnostics: list[Diagnostic]
    # files whose last valid version is served instead of the invalid one on disk
    kept: list[str] = field(default_factory=list)
    # files left out entirely (never valid)
    excluded: list[str] = field(default_factory=list)


class PolicyStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._good: dict[str, str] = {}

    def load(self) -> LoadResult:
        texts: dict[str, str] = {}
        unreadable: list[Diagnostic] = []
        for path in policy_files(self.root) if self.root.is_dir() else []:
            try:
                size = path.stat().st_size
                if size > MAX_FILE_BYTES:
                    unreadable.append(Diagnostic(str(path), 1, UNKNOWN, UNKNOWN, UNKNOWN,
                                                 f"file too large ({size} bytes; at most {MAX_FILE_BYTES})"))
                    continue
                texts[str(path)] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                unreadable.append(Diagnostic(str(path), 1, UNKNOWN, UNKNOWN, UNKNOWN, f"cannot read: {exc}"))
        if not self.root.is_dir():
            unreadable.append(Diagnostic(str(self.root), 1, UNKNOWN, UNKNOWN, UNKNOWN, "not a directory"))
        _, diagnostics = load_policy_texts(sorted(texts.items()))
        diagnostics = sorted(unreadable + diagnostics)
        bad = {d.file for d in diagnostics}
        served: dict[str, str] = {}
        kept, excluded = [], []
        for file in sorted(set(texts) | {f for f in bad if f in self._good}):
            if file not in bad:
                served[file] = texts[file]
            elif file in self._good:
                served[file] = self._good[file]
                kept.append(file)
            else:
                excluded.append(file)
        policy, _ = load_policy_texts(sorted(served.items()))
        # remember the valid versions; forget deleted files
        self._good = {file: text for file, text in served.items() if file in texts}
        for file in kept:
            log.warning("%s has errors; its last valid version stays in effect", file)
        for file in excluded:
            log.warning("%s has errors and was never valid; it is not applied", file)
        return LoadResult(policy, diagnostics, kept, excluded)
