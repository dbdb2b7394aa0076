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

Reloads redo only what changed (`_FileCache`): a file whose stat signature (inode, size, mtime, ctime) is
unchanged since it was last read is not read again, unless it was modified so shortly before that read
that a later write could keep the same mtime (git's "racily clean" rule, see `RACY_NS`); a file read again
with the same text is not parsed again; a file parsed again whose objects come out equal keeps the
previous object instances. When every file then gives the same document instances as at the previous load
(and the credentials are equal), that load's result is returned again: choosing applies the rules above to
the same definitions with the memory that load left, which picks the same winners. Otherwise, when every
object and source in effect is the same instance as at the previous validation, the cross-object
validation's previous result is reused: validation is pure, so it is the one a fresh run would give.
When only a few files changed, each defining the same keys as before, validly and only there (a one-line
edit), choosing is redone for those keys only (`_rechoose`: every other key's decision is the one a second
run makes again, as above), and when the objects that changed are VirtualServices whose footprint is the
same, only they are checked again (api/validate_incremental.py): such an edit costs the directory scan
plus the edited file, whatever the size of the mesh.
`PolicyStore(root, incremental=False)` is the reference path that reads, parses and validates everything on
every load (tests/unit/test_policystore_incremental.py compares the two).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from controlplane import gcpolicy
from controlplane.api.authorizationpolicy import FAIL_CLOSED_ANNOTATION
from controlplane.api.credentials import CREDENTIALS_DIR, Credential, load_credentials
from controlplane.api.diagnostics import INFO, UNKNOWN, Diagnostic
from controlplane.api.documents import Source, TagMemo
from controlplane.api.files import Unreadable, read_policy_file
from controlplane.api.loader import Decoded, decode_file, duplicate_diagnostic, policy_file_names
from controlplane.api.meta import ObjectKey, PolicyObject
from controlplane.api.policyset import PolicySet
from controlplane.api.validate import validate_policy, validation_of
from controlplane.api.validate_incremental import recheck_routes

log = logging.getLogger(__name__)

# A file modified less than this before it was read may be written again with the same mtime (file system
# timestamps advance in clock ticks of up to 10 ms on Linux, coarser on some file systems): its stat
# signature is not trusted at the next load, which reads it again.
RACY_NS = 100_000_000

# (inode, device, size, mtime, ctime) of a file: changes whenever its content can have changed, modulo the
# racy window above.
_Signature = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class LoadResult:
    policy: PolicySet
    diagnostics: list[Diagnostic]
    # objects ("Kind/namespace/name") whose last valid version is served instead of what is on disk
    kept: list[str] = field(default_factory=list)
    # objects on disk that are invalid and were never valid: not applied (an AuthorizationPolicy's
    # fail-closed stand-in is, in its place)
    excluded: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Chosen:
    """What `_add` and `_choose` gave at a load, which `_rechoose` redoes for a few changed files."""

    objects: list[PolicyObject]
    sources: dict[ObjectKey, Source]
    positions: dict[ObjectKey, int]  # index in `objects` of each key
    # keys with a single definition, valid, not from memory: a changed file's keys must all be these
    singles: set[ObjectKey]
    by_file: dict[str, list[Diagnostic]]  # `_add`'s diagnostics, for the files that have any
    choosing: list[Diagnostic]  # `_choose`'s
    kept: list[str]
    excluded: list[str]
    # made by `_rechoose`: the objects it started from, and the keys whose definitions it took anew
    base: list[PolicyObject] | None = None
    changed: tuple[ObjectKey, ...] = ()


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


@dataclass(frozen=True)
class _Parsed:
    """One file as last read and decoded: what a reload reuses while the file stays the same."""

    text: str
    decoded: tuple[Decoded, ...]
    syntax: Diagnostic | None
    # None: not to be trusted (read within RACY_NS of its mtime); read the file again next time
    signature: _Signature | None


@dataclass(frozen=True)
class _Unusable:
    """A file that cannot be used as a whole this time (unreadable, or looks half-written)."""

    diagnostic: Diagnostic


# (the directory exists, (file, its documents, its syntax error) for every file, the credentials in effect,
# the credentials' diagnostics: a credential kept from memory is equal while its diagnostic is new)
_Token = tuple[bool, tuple[tuple[str, tuple[Decoded, ...], Diagnostic | None], ...], dict[str, Credential],
               list[Diagnostic]]


class PolicyStore:
    def __init__(self, root: Path, *, incremental: bool = True) -> None:
        self.root = root
        self.incremental = incremental
        # the last valid version of every object in effect, with where it came from
        self._good: dict[ObjectKey, tuple[PolicyObject, Source]] = {}
        # keys of `_good` that hold a fail-closed stand-in, not a valid version (a newer stand-in replaces it)
        self._stand_ins: set[ObjectKey] = set()
        self._good_credentials: dict[str, Credential] = {}
        # the last text read of each file (to recognise a truncated copy of it)
        self._texts: dict[str, str] = {}
        # incremental only: each file's last decoded version, and the last cross-object validation
        self._parsed: dict[str, _Parsed] = {}
        self._tags: TagMemo = {}
        self._loaded: tuple[_Token, LoadResult] | None = None
        self._chosen: _Chosen | None = None  # what choosing gave at that load
        self._validated: tuple[list[PolicyObject], list[Source], dict[str, Credential],
                               tuple[PolicySet, list[Diagnostic]]] | None = None
        self.loaded_fingerprint: tuple[tuple[str, int, int], ...] = ()

    def fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        """(path, mtime, size) of every policy file: differs from `loaded_fingerprint` while an edit has
        not been loaded yet, even before the watcher has seen it (status --wait must not pass early)."""
        return tuple((file, stat.st_mtime_ns, stat.st_size) for file, stat in self._stat_files()[1])

    def _stat_files(self) -> tuple[list[str], list[tuple[str, os.stat_result]]]:
        """The policy files, and the stat of those that could be (a vanished one is reported when read)."""
        files = policy_file_names(self.root) if self.root.is_dir() else []
        found = []
        for file in files:
            try:
                found.append((file, os.stat(file)))
            except OSError:
                continue
        return files, found

    def load(self) -> LoadResult:
        """Read and validate the directory (blocking: the server runs it in a worker thread), without
        cyclic garbage collections meanwhile (gcpolicy.paused says why)."""
        with gcpolicy.paused():
            return self._load()

    def _load(self) -> LoadResult:
        files, stats = self._stat_files()
        self.loaded_fingerprint = tuple((file, stat.st_mtime_ns, stat.st_size) for file, stat in stats)
        diagnostics: list[Diagnostic] = []
        entries: dict[ObjectKey, list[_Entry]] = {}
        signatures = {file: (stat.st_ino, stat.st_dev, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
                      for file, stat in stats}  # `_Signature`
        # fresh dicts, changed below: a copy of the store (tests/reliability/fuzz.py) keeps its own memory
        present = set(files)
        # (a copy of the dict, in C, when no file went away: most reloads)
        self._texts = dict(self._texts) if self._texts.keys() <= present else \
            {file: text for file, text in self._texts.items() if file in present}
        self._parsed = dict(self._parsed) if self._parsed.keys() <= present else \
            {file: parsed for file, parsed in self._parsed.items() if file in present}
        outcomes = [(file, self._read(file, signatures.get(file))) for file in files]
        credentials, bad_credentials = self._credentials()
        token = self._token(outcomes, credentials, bad_credentials)
        previous = self._loaded
        if token is not None and previous is not None and _same_token(previous[0], token):
            # every file gives the same documents as at the previous load (whose result made `_good`):
            # choosing and validating again would give the same result
            result = previous[1]
            result = LoadResult(result.policy, list(result.diagnostics), list(result.kept),
                                list(result.excluded))
        else:
            chosen = self._rechoose(previous[0], token) if token is not None and previous is not None \
                else None
            if chosen is None:
                by_file: dict[str, list[Diagnostic]] = {}
                for file, outcome in outcomes:
                    found = self._add(file, outcome, entries)
                    if found:
                        by_file[file] = found
                        diagnostics.extend(found)
                before = len(diagnostics)
                objects, sources, kept, excluded = self._choose(entries, diagnostics)
                singles = {key for key, found_entries in entries.items() if len(found_entries) == 1
                           and found_entries[0].obj is not None and not found_entries[0].kept}
                chosen = _Chosen(objects, sources, {key: index for index, key in enumerate(sources)},
                                 singles, by_file, diagnostics[before:], kept, excluded)
            else:
                diagnostics.extend(item for found in chosen.by_file.values() for item in found)
                diagnostics.extend(chosen.choosing)
            if not self.root.is_dir():
                diagnostics.append(Diagnostic(str(self.root), 1, UNKNOWN, UNKNOWN, UNKNOWN,
                                              "not a directory"))
            policy, semantic = self._validate(chosen.objects, chosen.sources, credentials,
                                              chosen if chosen.base is not None else None)
            result = LoadResult(policy, sorted(diagnostics + bad_credentials + semantic), list(chosen.kept),
                                list(chosen.excluded))
            self._loaded = None if token is None else (token, result)
            self._chosen = None if token is None else chosen
        for key in result.kept:
            log.warning("%s has errors; its last valid version stays in effect", key)
        for key in result.excluded:
            log.warning("%s has errors and was never valid; it is not applied", key)
        return result

    def _rechoose(self, before: _Token, now: _Token) -> _Chosen | None:
        """`_add` and `_choose` of every file, redone for the few files that changed since the previous load
        (None when that does not apply): each changed file must define, before and now, the same keys in
        the same order, each validly and only there, with no syntax error; then choosing keeps every other
        object's decision (it is one a second run makes again: see the module docstring) and takes the new
        definition of each of those keys, which is the only one."""
        chosen = self._chosen
        if chosen is None or before[0] != now[0] or len(before[1]) != len(now[1]):
            return None
        changed: list[tuple[str, tuple[Decoded, ...], Diagnostic | None]] = []
        for old, new in zip(before[1], now[1], strict=True):
            if old[0] != new[0]:
                return None
            if old[2] is new[2] and (old[1] is new[1] or _same(old[1], new[1])):
                continue
            if old[2] is not None or new[2] is not None or len(old[1]) != len(new[1]) or \
                    len(changed) >= _RECHECK_MAX:
                return None
            for was, item in zip(old[1], new[1], strict=True):
                if was.key != item.key or item.key is None or item.obj is None or was.obj is None or \
                        item.key not in chosen.singles or item.key in self._stand_ins:
                    return None
            changed.append(new)
        if not changed:
            return None
        objects, sources, good = list(chosen.objects), dict(chosen.sources), dict(self._good)
        by_file = dict(chosen.by_file)
        keys: list[ObjectKey] = []
        for file, decoded, _ in changed:
            found = [diagnostic for item in decoded for diagnostic in item.diagnostics]
            if found:
                by_file[file] = found
            else:
                by_file.pop(file, None)
            for item in decoded:
                assert item.key is not None and item.obj is not None  # checked above
                position = chosen.positions[item.key]
                if objects[position] is item.obj and sources[item.key] is item.source:
                    continue  # a neighbour of the edit in its file, decoded to the same instance again
                objects[position] = item.obj
                sources[item.key] = item.source
                good[item.key] = (item.obj, item.source)
                keys.append(item.key)
        self._good = good
        return _Chosen(objects, sources, chosen.positions, chosen.singles, by_file, chosen.choosing,
                       chosen.kept, chosen.excluded, chosen.objects, tuple(keys))

    def _token(self, outcomes: list[tuple[str, _Parsed | _Unusable]], credentials: dict[str, Credential],
               bad_credentials: list[Diagnostic]) -> _Token | None:
        """What a load's result depends on besides `_good`, when every file could be used; None then."""
        if not self.incremental or any(isinstance(outcome, _Unusable) for _, outcome in outcomes):
            return None
        files = tuple((file, outcome.decoded, outcome.syntax) for file, outcome in outcomes
                      if isinstance(outcome, _Parsed))
        return self.root.is_dir(), files, credentials, bad_credentials

    def _validate(self, objects: list[PolicyObject], sources: dict[ObjectKey, Source],
                  credentials: dict[str, Credential], hint: _Chosen | None = None
                  ) -> tuple[PolicySet, list[Diagnostic]]:
        """`validate_policy`, or its previous result when its input is the same objects (by identity:
        unchanged files keep their instances) with the same sources and equal credentials, or that result
        with the few objects that changed checked again (`hint`: what `_rechoose` changed, if it did)."""
        ordered = list(sources.values())  # `_choose` adds them in the order of `objects`
        previous = self._validated
        if (self.incremental and previous is not None and _same(previous[0], objects)
                and _same(previous[1], ordered) and previous[2] == credentials):
            policy, semantic = previous[3]
            return policy, list(semantic)
        if self.incremental and previous is not None and previous[2] == credentials:
            if hint is not None and hint.base is previous[0]:
                # `_rechoose` knows which objects changed: no need to compare them all
                changes = {key: (objects[hint.positions[key]], sources[key]) for key in hint.changed}
                validation = validation_of(previous[3][0])
                rechecked = None if validation is None else \
                    recheck_routes(previous[3][0], validation, changes)
            else:
                rechecked = _recheck(previous, objects, ordered)
            if rechecked is not None:
                self._validated = (objects, ordered, credentials, (rechecked[0], list(rechecked[1])))
                return rechecked
        result = validate_policy(PolicySet(objects, sources=sources, credentials=credentials))
        if self.incremental:
            self._validated = (objects, ordered, credentials, (result[0], list(result[1])))
        return result

    def _decode(self, file: str, text: str, signature: _Signature | None) -> _Parsed:
        """The file's documents decoded; reuses the previous decoding when the text is the same, and the
        previous instance of every document that decodes to an equal object at the same position."""
        previous = self._parsed.get(file) if self.incremental else None
        if previous is not None and previous.text == text:
            parsed = _Parsed(text, previous.decoded, previous.syntax, signature)
        else:
            decoded, syntax = decode_file(file, text, self._tags)
            if previous is not None:
                before = {(item.key, item.source.line): item for item in previous.decoded}
                decoded = [_same_or(before.get((item.key, item.source.line)), item) for item in decoded]
            parsed = _Parsed(text, tuple(decoded), syntax, signature)
        if self.incremental:
            self._parsed[file] = parsed
        return parsed

    def _read(self, file: str, signature: _Signature | None) -> _Parsed | _Unusable:
        """The file's documents (read and decoded only when it changed), or why it cannot be used."""
        cached = self._parsed.get(file) if self.incremental else None
        if cached is not None and signature is not None and cached.signature == signature:
            # unchanged since it was read (and was not read racily): neither read nor parsed again
            return cached
        read_at = time.time_ns()
        text = read_policy_file(file)
        if isinstance(text, Unreadable):
            self._parsed.pop(file, None)
            return _Unusable(Diagnostic(file, 1, UNKNOWN, UNKNOWN, UNKNOWN, text.reason))
        previous = self._texts.get(file)
        if previous is not None and _truncated(text, previous):
            # not remembered: the complete version stays the reference until the write finishes
            self._parsed.pop(file, None)
            return _Unusable(Diagnostic(file, text.count("\n") + 1, UNKNOWN, UNKNOWN, UNKNOWN,
                                        "the file looks half-written (its start, cut in a line); what it "
                                        "served stays in effect until it is complete"))
        self._texts[file] = text
        trusted = signature is not None and read_at - signature[3] > RACY_NS
        return self._decode(file, text, signature if trusted else None)

    def _add(self, file: str, outcome: _Parsed | _Unusable,
             entries: dict[ObjectKey, list[_Entry]]) -> list[Diagnostic]:
        """Add the file's definitions to `entries`; returns its diagnostics."""
        if isinstance(outcome, _Unusable):
            self._keep_from(file, set(), entries)
            return [outcome.diagnostic]
        decoded, syntax = outcome.decoded, outcome.syntax
        diagnostics = [syntax] if syntax is not None else []
        for item in decoded:
            diagnostics.extend(item.diagnostics)
            if item.key is not None:
                entries.setdefault(item.key, []).append(_Entry(item.source, item.obj, fallback=item.fallback))
        if syntax is not None or any(item.obj is None and item.diagnostics for item in decoded):
            defined = {item.key for item in decoded if item.key is not None and item.obj is not None}
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
        # by fields, as ObjectKey orders (its generated __lt__ is several times slower)
        for key in sorted(entries, key=lambda key: (key.kind, key.namespace, key.name)):
            found = entries[key]
            winner = found[0] if len(found) == 1 else self._winner(key, found)
            for other in found if len(found) > 1 else ():
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


def _same(before: Sequence[object], now: Sequence[object]) -> bool:
    return len(before) == len(now) and all(a is b for a, b in zip(before, now, strict=True))


# More changed objects than this at once (a bulk edit, a git checkout) are validated as a whole.
_RECHECK_MAX = 64


def _recheck(previous: tuple[list[PolicyObject], list[Source], dict[str, Credential],
                             tuple[PolicySet, list[Diagnostic]]],
             objects: list[PolicyObject], ordered: list[Source]) -> tuple[PolicySet, list[Diagnostic]] | None:
    """The previous validation with the few objects that changed checked again (api/validate_incremental.py),
    or None when that does not apply: the objects must be the same keys in the same order (both lists are
    sorted by key), only some of them other instances or from other sources."""
    before, sources_before = previous[0], previous[1]
    if len(before) != len(objects) or len(sources_before) != len(ordered):
        return None
    validation = validation_of(previous[3][0])
    if validation is None:
        return None
    changes: dict[ObjectKey, tuple[PolicyObject, Source]] = {}
    for index, (old, new) in enumerate(zip(before, objects, strict=True)):
        if old is new and sources_before[index] is ordered[index]:
            continue
        key = new.key
        if old.key != key or len(changes) >= _RECHECK_MAX:
            return None
        changes[key] = (new, ordered[index])
    return recheck_routes(previous[3][0], validation, changes)


def _same_token(before: _Token, now: _Token) -> bool:
    """Same directory state, the same document instances file by file, equal credentials."""
    return (before[0] == now[0] and before[2] == now[2] and before[3] == now[3]
            and len(before[1]) == len(now[1])
            and all(a[0] == b[0] and a[2] is b[2] and (a[1] is b[1] or _same(a[1], b[1]))
                    for a, b in zip(before[1], now[1], strict=True)))


def _same_or(before: Decoded | None, now: Decoded) -> Decoded:
    """`before` when it decodes to the same thing as `now` (so unchanged objects keep their instance)."""
    if before is not None and before.obj == now.obj and before.source == now.source and \
            before.diagnostics == now.diagnostics:
        return before
    return now
