"""A property-based fuzzer of the policy pipeline: hypothesis mutates one file of config/ per example.

Mutations: a field set to a wrong type, an out-of-range number or duration, unicode, deep nesting; a key
dropped or an unknown one added; YAML tags, alias bombs, non-UTF-8 bytes, a truncated (half-written) or
oversized file, random byte flips; a document copied into another file (a duplicate), or deleted.

Properties, checked on the running server's own pieces (PolicyStore, make_factory, Snapshot):
- no exception escapes load, validate, build, translate or snapshot;
- what validates, builds: every proxy shape builds with no object left out, and its snapshot is consistent;
- an invalid edit (the file cannot be read or parsed, or one of its objects is invalid) changes nothing
  that is served: the policy equals the one before the edit, and so do the proxies' snapshots;
- a later reload (an unrelated edit elsewhere) never loses a last valid version: the policy stays equal.

`make test` runs a bounded number of examples with a fixed seed (test_fuzz.py); `make fuzz` runs
`python -m tests.reliability.fuzz --examples N` (at least 10,000) and prints the counts.
"""

from __future__ import annotations

import argparse
import copy
import logging
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.api.files import MAX_FILE_BYTES, Unreadable, read_policy_file
from controlplane.api.loader import decode_file
from controlplane.app import make_factory
from controlplane.isolation import BuildFailures
from controlplane.policystore import LoadResult, PolicyStore
from controlplane.xds.snapshot import Interner, Snapshot
from tests.reliability.policy_support import CONFIG, IDENTITIES

FILES = ("destinationrules.yaml", "gateways.yaml", "mesh.yaml", "routes.yaml", "services.yaml",
         "telemetry.yaml")
SEPARATOR = "\n---\n"

DURATIONS = ["0s", "1ms", "1.5s", "-1s", "5", "1e3s", "ms", "3m2s", "0.0000001ns", "9223372036854775807s",
             "9223372036s", "99999999999h", "\u0661s", "2562047h47m16.854775807s", "1h1h1h", " 2s "]
NUMBERS = [0, -1, 1, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64, 10**30]
TAGS = ["!!int x", "!custom x", "!!python/object/apply:os.system ['true']", "!!binary aGk=", "!!set {a}",
        "!!timestamp 2001-02-30", "!!float nope", "2001-02-30"]

values = st.one_of(
    st.sampled_from(NUMBERS), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(DURATIONS), st.text(max_size=12),
    st.booleans(), st.none(), st.lists(st.integers(0, 10), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(0, 3), max_size=2),
    st.integers(1, 80).map(lambda depth: _nested(depth)),
)


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


@dataclass(frozen=True)
class Mutation:
    kind: str
    file: str
    document: int
    path: int = 0
    value: Any = None
    position: float = 0.0
    other: str = ""


@st.composite
def mutations(draw: st.DrawFn) -> Mutation:
    kind = draw(st.sampled_from(["set", "set", "set", "drop", "unknown", "tag", "bomb", "deep", "bytes",
                                 "truncate", "huge", "flip", "duplicate", "delete"]))
    value = draw(values) if kind == "set" else None
    file, document = draw(st.sampled_from(FILES)), draw(st.integers(0, 20))
    path, position = draw(st.integers(0, 10_000)), draw(st.floats(0, 1))
    other = draw(st.sampled_from(["aaa.yaml", "zzz.yaml", *FILES]))
    return Mutation(kind, file, document, path, value, position, other)


def _leaves(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(data, dict):
        return [path] + [p for key, value in data.items() for p in _leaves(value, (*path, key))]
    if isinstance(data, list):
        return [path] + [p for index, value in enumerate(data) for p in _leaves(value, (*path, index))]
    return [path]


def _set(data: Any, path: tuple[Any, ...], value: Any, drop: bool = False) -> Any:
    if not path:
        return value
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return data


def apply(mutation: Mutation, texts: dict[str, str]) -> dict[str, bytes]:
    """The files to write (name relative to the policy root → bytes) for one mutation."""
    text = texts[mutation.file]
    documents = text.split(SEPARATOR)
    index = mutation.document % len(documents)
    cut = int(len(text) * mutation.position)
    kind = mutation.kind
    if kind in ("set", "drop", "unknown"):
        data = yaml.safe_load(documents[index])
        paths = [p for p in _leaves(data) if p or kind == "set"]
        if data is None or not paths:
            return {mutation.file: text.encode()}
        path = paths[mutation.path % len(paths)]
        if kind == "unknown":
            target = data
            for step in path:
                target = target[step] if isinstance(target, dict | list) else target
            if isinstance(target, dict):
                target["bogusField"] = 1
        else:
            data = _set(data, path, copy.deepcopy(mutation.value), drop=kind == "drop")
        documents[index] = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        return {mutation.file: SEPARATOR.join(documents).encode()}
    if kind == "tag":
        lines = text.split("\n")
        candidates = [i for i, line in enumerate(lines) if ": " in line and not line.lstrip().startswith("#")]
        i = candidates[mutation.path % len(candidates)]
        lines[i] = lines[i].split(": ", 1)[0] + ": " + TAGS[mutation.path % len(TAGS)]
        return {mutation.file: "\n".join(lines).encode()}
    if kind == "bomb":
        levels = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))
        return {mutation.file: (text + SEPARATOR + "l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + levels).encode()}
    if kind == "deep":
        return {mutation.file: (text[:cut] + "[" * (100 + mutation.path) + text[cut:]).encode()}
    if kind == "bytes":
        return {mutation.file: text[:cut].encode() + b"\xe9\xff" + text[cut:].encode()}
    if kind == "truncate":
        return {mutation.file: text[:cut].encode()}
    if kind == "huge":
        return {mutation.file: (text + "\n#" + "x" * MAX_FILE_BYTES).encode()}
    if kind == "flip":
        position = min(cut, len(text) - 1)
        return {mutation.file: (text[:position] + chr((ord(text[position]) + 1 + mutation.path % 90) % 0x2FF)
                                + text[position + 1:]).encode()}
    if kind == "duplicate":
        copied = documents[index]
        target = texts.get(mutation.other, "")
        return {mutation.other: (target + SEPARATOR + copied if target else copied).encode()}
    # delete a document
    del documents[index]
    return {mutation.file: SEPARATOR.join(documents).encode()}


class Fuzzer:
    """One copy of config/, its baseline load, and the check of one mutation against it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fuzz-config-"))
        self.root = self.dir / "config"
        shutil.copytree(CONFIG, self.root)
        self.texts = {name: (self.root / name).read_text() for name in FILES}
        self.store = PolicyStore(self.root)
        self.baseline = self.store.load()
        assert self.baseline.diagnostics == [], self.baseline.diagnostics
        self.snapshots(self.baseline)
        self.counts: Counter[str] = Counter()

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def snapshots(self, result: LoadResult) -> list[str]:
        failures = BuildFailures()
        factory = make_factory(result.policy, failures)
        interner = Interner()
        versions = []
        for identity in IDENTITIES:
            snapshot = Snapshot.build(factory(identity), interner)
            assert snapshot.consistency_errors() == [], snapshot.consistency_errors()
            versions.append(snapshot.version)
        assert failures.diagnostics() == [], failures.diagnostics()  # what validates, builds
        return versions

    def check(self, mutation: Mutation) -> None:
        written = apply(mutation, self.texts)
        store = copy.copy(self.store)  # the baseline's memory (its dicts are replaced, never mutated)
        try:
            for name, data in written.items():
                (self.root / name).write_bytes(data)
            result = store.load()
            invalid = any(self._invalid(name) for name in written)
            self.counts[f"{mutation.kind}:{'invalid' if invalid else 'valid'}"] += 1
            if invalid:
                # the same policy objects give the same snapshots (build and translate are pure), so the
                # served config of every proxy is unchanged
                assert _objects(result) == _objects(self.baseline), "an invalid edit changed the policy"
            else:
                self.snapshots(result)
            if mutation.kind == "duplicate":
                for key, obj in _objects(self.baseline).items():
                    assert _objects(result).get(key) == obj, f"a duplicate took {key} over"
            # an unrelated edit elsewhere, then a reload: no last valid version is lost
            unrelated = self.root / ("mesh.yaml" if "mesh.yaml" not in written else "telemetry.yaml")
            unrelated.write_text(unrelated.read_text() + "\n# an unrelated comment\n")
            assert _objects(store.load()) == _objects(result), "a later reload lost a last valid version"
        finally:
            for name in {*written, "mesh.yaml", "telemetry.yaml"}:
                original = CONFIG / name
                if original.exists():
                    (self.root / name).write_bytes(original.read_bytes())
                else:
                    (self.root / name).unlink(missing_ok=True)

    def _invalid(self, name: str) -> bool:
        """Whether the written file cannot be read or parsed, or one of its objects is invalid."""
        text = read_policy_file(str(self.root / name))
        if isinstance(text, Unreadable):
            return True
        decoded, syntax = decode_file(str(self.root / name), text)
        return syntax is not None or any(item.diagnostics for item in decoded)


def _objects(result: LoadResult) -> dict[Any, Any]:
    return {obj.key: obj for obj in result.policy}


def run(fuzzer: Fuzzer, examples: int, seed: int | None) -> None:
    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck))
    @given(mutations())
    def property_holds(mutation: Mutation) -> None:
        fuzzer.check(mutation)

    if seed is not None:
        from hypothesis import seed as with_seed

        property_holds = with_seed(seed)(property_holds)
    property_holds()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: derandomized)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # "last valid version stays in effect", thousands of times
    fuzzer = Fuzzer()
    started = time.monotonic()
    try:
        run(fuzzer, args.examples, args.seed)
    finally:
        fuzzer.close()
        total = sum(fuzzer.counts.values())
        print(f"fuzz: {total} examples in {time.monotonic() - started:.0f}s "
              f"({sum(v for k, v in fuzzer.counts.items() if k.endswith(':invalid'))} invalid edits, "
              f"{sum(v for k, v in fuzzer.counts.items() if k.endswith(':valid'))} valid)")
        for key, count in sorted(fuzzer.counts.items()):
            print(f"  {key:24} {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
