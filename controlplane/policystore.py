"""The policy directory as served: what is on disk, minus edits that do not validate — object by object.

Each policy object (kind/namespace/name) is valid or invalid on its own, as Kubernetes' admission makes it
for Istio: a valid object applies even when its neighbour in the same file is invalid; an invalid object
keeps its last valid version in effect, or is absent if it never had one (an AuthorizationPolicy is
enforced as its fail-closed stand-in instead, api/authorizationpolicy.py `fail_closed`: absent could mean
allow-all), and its diagnostics say which.
A file that cannot be used as a whole (unreadable, not a regular file, too large, not UTF-8, a YAML syntax
error as a half-written file has) keeps every object it served before; so does a file with any invalid
object for the objects it no longer defines (a half-written file may end on a document boundary): an
object is deleted when a valid version of its file no longer has it, or when its file is deleted. A file
that is a strict prefix of its last read version and does not end a line (a copy or a write caught half-way
that happens to parse) is treated as unusable too. This holds across any number of later reloads: the last
valid versions are remembered until then.

Duplicates (one kind/namespace/name defined twice): the definition in effect stays — the object keeps
coming from the file it was served from, so a copy added to a file that sorts earlier never takes over;
otherwise (at startup, or when that file no longer defines it) the first by path (relative to the
directory, as `policy_files` sorts them), then by position in the file. Every other definition gets the
diagnostic, never the one in effect.

Gateway credentials (`credentials/<name>/{tls.crt,tls.key,ca.crt}`, see api/credentials.py) follow the same
rule per credential: one that stops being usable (a rotation caught half-way, a key that does not match)
keeps its last usable version in effect, so a bad rotation never takes a listener down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.api.authorizationpolicy import FAIL_CLOSED_ANNOTATION
from controlplane.api.credentials import CREDENTIALS_DIR, Credential, load_credentials
from controlplane.api.diagnostics import INFO, UNKNOWN, Diagnostic
from controlplane.api.documents import Source
from controlplane.api.files import Unreadable, read_policy_file
from controlplane.api.loader import Decoded, decode_file, duplicate_diagnostic, policy_files
from controlplane.api.meta import ObjectKey, PolicyObject
from controlplane.api.policyset import PolicySet
from controlplane.api.validate import validate_policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadResult:
    policy: PolicySet
    diagnostics: list[Diagnostic]
    # objects ("Kind/namespace/name") whose last valid version is served instead of what is on disk
    kept: list[str] = field(default_factory=list)
    # objects on disk that are invalid and were never valid: not applied (an AuthorizationPolicy's
    # fail-closed stand-in is, in its place)
    excluded: list[str] = field(default_factory=list)


def _truncated(text: str, previous: str) -> bool:
    return len(text) < len(previous) and previous.startswith(text) and not text.endswith("\n")


@dataclass(frozen=True)
class _Entry:
    """One definition of an object: valid (`obj`), or invalid (`obj` None), or `kept` from memory."""

    source: Source
    obj: PolicyObject | None
    kept: bool = False
    # an invalid object's fail-closed stand-in (loader.Decoded.fallback)
    fallback: PolicyObject | None = None


class PolicyStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        # the last valid version of every object in effect, with where it came from
        self._good: dict[ObjectKey, tuple[PolicyObject, Source]] = {}
        # keys of `_good` that hold a fail-closed stand-in, not a valid version (a newer stand-in replaces it)
        self._stand_ins: set[ObjectKey] = set()
        self._good_credentials: dict[str, Credential] = {}
        # the last text read of each file (to recognise a truncated copy of it)
        self._texts: dict[str, str] = {}
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
        """Read and validate the directory (blocking: the server runs it in a worker thread)."""
        self.loaded_fingerprint = self.fingerprint()
        diagnostics: list[Diagnostic] = []
        entries: dict[ObjectKey, list[_Entry]] = {}
        files = [str(path) for path in policy_files(self.root)] if self.root.is_dir() else []
        if not self.root.is_dir():
            diagnostics.append(Diagnostic(str(self.root), 1, UNKNOWN, UNKNOWN, UNKNOWN, "not a directory"))
        for file in files:
            diagnostics.extend(self._read(file, entries))
        self._texts = {file: text for file, text in self._texts.items() if file in files}
        objects, sources, kept, excluded = self._choose(entries, diagnostics)
        credentials, bad_credentials = self._credentials()
        policy, semantic = validate_policy(PolicySet(objects, sources=sources, credentials=credentials))
        for key in kept:
            log.warning("%s has errors; its last valid version stays in effect", key)
        for key in excluded:
            log.warning("%s has errors and was never valid; it is not applied", key)
        return LoadResult(policy, sorted(diagnostics + bad_credentials + semantic), kept, excluded)

    def _read(self, file: str, entries: dict[ObjectKey, list[_Entry]]) -> list[Diagnostic]:
        """Add the file's definitions to `entries`; returns its diagnostics."""
        text = read_policy_file(file)
        if isinstance(text, Unreadable):
            self._keep_from(file, set(), entries)
            return [Diagnostic(file, 1, UNKNOWN, UNKNOWN, UNKNOWN, text.reason)]
        previous = self._texts.get(file)
        if previous is not None and _truncated(text, previous):
            # not remembered: the complete version stays the reference until the write finishes
            self._keep_from(file, set(), entries)
            return [Diagnostic(file, text.count("\n") + 1, UNKNOWN, UNKNOWN, UNKNOWN,
                               "the file looks half-written (its start, cut in a line); what it served "
                               "stays in effect until it is complete")]
        self._texts[file] = text
        decoded, syntax = decode_file(file, text)
        diagnostics = [syntax] if syntax is not None else []
        defined: set[ObjectKey] = set()
        for item in decoded:
            diagnostics.extend(item.diagnostics)
            if item.key is None:
                continue
            if item.obj is not None:
                defined.add(item.key)
            entries.setdefault(item.key, []).append(_Entry(item.source, item.obj, fallback=item.fallback))
        if syntax is not None or any(item.obj is None and item.diagnostics for item in decoded):
            self._keep_from(file, defined, entries)
        return diagnostics

    def _keep_from(self, file: str, defined: set[ObjectKey], entries: dict[ObjectKey, list[_Entry]]) -> None:
        """A file that cannot be trusted as a whole deletes nothing: what it served and does not define
        validly now stays (where it is still defined, invalid, that definition is the one in effect)."""
        for key, (obj, source) in self._good.items():
            if source.file == file and key not in defined and not any(
                entry.source.file == file for entry in entries.get(key, [])
            ):
                entries.setdefault(key, []).append(_Entry(source, obj, kept=True))

    def _choose(
        self, entries: dict[ObjectKey, list[_Entry]], diagnostics: list[Diagnostic]
    ) -> tuple[list[PolicyObject], dict[ObjectKey, Source], list[str], list[str]]:
        """One definition per object (see the module docstring for duplicates); remembers the valid ones."""
        objects: list[PolicyObject] = []
        sources: dict[ObjectKey, Source] = {}
        kept: list[str] = []
        excluded: list[str] = []
        good: dict[ObjectKey, tuple[PolicyObject, Source]] = {}
        stand_ins: set[ObjectKey] = set()
        for key in sorted(entries):
            found = entries[key]
            winner = self._winner(key, found)
            for other in found:
                if other is not winner and other.obj is not None and not other.kept:
                    diagnostics.append(duplicate_diagnostic(Decoded(other.source, key, other.obj, ()),
                                                            winner.source))
            if winner.obj is not None:
                obj, source = winner.obj, winner.source
                if winner.kept and key in self._stand_ins:
                    stand_ins.add(key)
            elif winner.fallback is not None and (key not in self._good or key in self._stand_ins):
                obj, source = winner.fallback, winner.source
                stand_ins.add(key)
                diagnostics.append(_note(winner.source, key, "invalid and never valid; enforced as "
                                         f"{_fail_closed(obj)} (fail closed)"))
                excluded.append(str(key))
            elif key in self._good:
                obj, source = self._good[key]
                diagnostics.append(_note(winner.source, key, f"invalid; its last valid version "
                                         f"({source.file}:{source.line}) stays in effect"))
            else:
                diagnostics.append(_note(winner.source, key, "invalid and never valid; not applied"))
                excluded.append(str(key))
                continue
            if (winner.kept or winner.obj is None) and key not in stand_ins:
                kept.append(str(key))
            objects.append(obj)
            sources[key] = source
            good[key] = (obj, source)
        self._good = good
        self._stand_ins = stand_ins
        return objects, sources, kept, excluded

    def _winner(self, key: ObjectKey, found: list[_Entry]) -> _Entry:
        previous = self._good.get(key)
        if previous is not None:
            for entry in found:
                if entry.source.file == previous[1].file:
                    return entry
        # files are read in `policy_files` order, documents in file order; an invalid definition would
        # have been refused by admission, so the first valid one is the first definition
        return next((entry for entry in found if entry.obj is not None), found[0])

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


def _fail_closed(obj: PolicyObject) -> str:
    return obj.metadata.annotations.get(FAIL_CLOSED_ANNOTATION, "a fail-closed stand-in")


def _note(source: Source, key: ObjectKey, what: str) -> Diagnostic:
    """What the server did with an invalid object: information beside the object's own errors, not one more
    error (status counts and the console's severities would double every problem otherwise)."""
    return Diagnostic(source.file, source.line, key.kind, key.name, UNKNOWN, f"{key} is {what}",
                      severity=INFO)
