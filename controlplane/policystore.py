"""The policy directory as served: what is on disk, minus edits that do not validate.

A file with any problem is never half-applied. If an earlier version of it was valid, that version stays
in effect (an invalid edit changes nothing that is served); a file that was never valid is left out (at
startup the valid files are served). Deleting a file is a valid edit. The diagnostics always describe the
files as they are on disk, so the user sees what to fix.

Gateway credentials (`credentials/<name>/{tls.crt,tls.key,ca.crt}`, see api/credentials.py) follow the same
rule per credential: one that stops being usable (a rotation caught half-way, a key that does not match)
keeps its last usable version in effect, so a bad rotation never takes a listener down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.api.credentials import CREDENTIALS_DIR, Credential, load_credentials
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
        self._good_credentials: dict[str, Credential] = {}
        self.loaded_fingerprint: tuple[tuple[str, int, int], ...] = ()

    def fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        """(path, mtime, size) of every policy file: differs from `loaded_fingerprint` while an edit has
        not been loaded yet, even before the watcher has seen it (status --wait must not pass early)."""
        found = []
        for path in policy_files(self.root) if self.root.is_dir() else []:
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(found)

    def load(self) -> LoadResult:
        self.loaded_fingerprint = self.fingerprint()
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
        credentials, bad_credentials = self._credentials()
        _, diagnostics = load_policy_texts(sorted(texts.items()), credentials)
        diagnostics = sorted(unreadable + bad_credentials + diagnostics)
        bad = {d.file for d in diagnostics if d.is_error}  # warnings and infos are applied
        served: dict[str, str] = {}
        kept, excluded = [], []
        for file in sorted(set(texts) | bad):
            if file not in bad:
                served[file] = texts[file]
            elif file in self._good:
                served[file] = self._good[file]
                kept.append(file)
            else:
                excluded.append(file)
        policy, _ = load_policy_texts(sorted(served.items()), credentials)
        # remember the valid versions; forget deleted files
        self._good = {file: text for file, text in served.items() if file in texts}
        for file in kept:
            log.warning("%s has errors; its last valid version stays in effect", file)
        for file in excluded:
            log.warning("%s has errors and was never valid; it is not applied", file)
        return LoadResult(policy, diagnostics, kept, excluded)

    def _credentials(self) -> tuple[dict[str, Credential], list[Diagnostic]]:
        """The usable credentials on disk, plus the last usable version of any that is unusable now."""
        directory = self.root / CREDENTIALS_DIR
        found, diagnostics = load_credentials(directory)
        present = {p.name for p in directory.iterdir() if p.is_dir()} if directory.is_dir() else set()
        for name, previous in self._good_credentials.items():
            if name not in found and name in present:
                log.warning("credential %s is not usable; its last usable version stays in effect", name)
                found[name] = previous
        self._good_credentials = dict(found)
        return dict(sorted(found.items())), diagnostics
