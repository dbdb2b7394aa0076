"""The incremental PolicyStore (re-reads and re-validates only what changed) gives exactly what the full
path gives: after random sequences of file edits, its PolicySet, diagnostics, kept and excluded objects
equal those of `PolicyStore(root, incremental=False)` fed the same history (which reads, parses and
validates everything on every load), and those of a fresh store whenever history cannot matter (no last
valid version in effect, no invalid object, no duplicate, no file that looks half-written: which definition
wins, or whether a file's start is taken for a copy caught half-way, depends on what was read before)."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

import controlplane.policystore as policystore
from controlplane.api.meta import ObjectKey
from controlplane.policystore import LoadResult, PolicyStore

HOSTS = [f"s{i}.mesh.local" for i in range(6)]


def _service(name: str, host: str, port: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{host}]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
"""


def _route(name: str, host: str, target: str, timeout: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: [{host}]
  http:
  - route: [{{destination: {{host: {target}, subset: v1}}}}]
    timeout: {timeout}s
"""


def _rule(name: str, host: str, subset: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}}}
spec:
  host: {host}
  trafficPolicy: {{connectionPool: {{tcp: {{maxConnections: 10}}}}}}
  subsets: [{{name: {subset}, labels: {{v: "1"}}}}]
"""


def _document(rng: random.Random, prefix: str = "") -> str:
    """A random document: valid most of the time, with cross-object conflicts (a host declared twice, a
    route to a missing host or subset, two trafficPolicies for a host) and sometimes invalid on its own."""
    name = f"{prefix}o{rng.randrange(8)}"
    host, target = rng.choice(HOSTS), rng.choice(HOSTS)
    kind = rng.randrange(3)
    if kind == 0:
        text = _service(name, host, 9000 + rng.randrange(50))
    elif kind == 1:
        text = _route(name, host, target, rng.randrange(1, 5))
    else:
        text = _rule(name, host, rng.choice(["v1", "v2"]))
    if not prefix and rng.random() < 0.15:
        text = text.replace("metadata: {", "bogus: 1\nmetadata: {")
    return text


def _file(rng: random.Random, prefix: str = "") -> str:
    """Random documents; with a `prefix`, valid ones named after it (no duplicates across files)."""
    documents = [_document(rng, f"{prefix}{index}") for index in range(rng.randrange(1, 4))]
    if not prefix:
        documents = [_document(rng) for _ in documents]
    prefix = "# a comment that moves every line\n" if rng.random() < 0.2 else ""
    return prefix + "---\n".join(documents)


def _edit(rng: random.Random, root: Path, names: list[str], clock: list[int]) -> None:
    """One random change of the directory, as editors, git and half-finished copies make them."""
    name = rng.choice(names)
    path = root / name
    action = rng.choice(["rewrite", "rewrite", "comment", "truncate", "syntax", "delete", "duplicate",
                         "same"])
    old = path.read_text() if path.exists() else ""
    if action == "rewrite" or not old:
        path.write_text(_file(rng))
    elif action == "comment":
        path.write_text(old + "# touched\n" if rng.random() < 0.5 else "# touched\n" + old)
    elif action == "truncate":
        path.write_text(old[: rng.randrange(1, len(old))].rstrip("\n") or "x")
    elif action == "syntax":
        path.write_text(old + "spec: [unclosed\n")
    elif action == "delete":
        path.unlink()
        return
    elif action == "duplicate":
        other = root / rng.choice(names)
        other.write_text((other.read_text() + "---\n" if other.exists() else "") + old.split("---\n")[0])
        path = other
    else:  # rewritten with the same text (a `git checkout` of an unchanged file)
        path.write_text(old)
    if rng.random() < 0.7:
        # an old, distinct mtime: the store may then trust the file's stat and skip reading it later
        clock[0] += 1
        os.utime(path, ns=(clock[0] * 10**9, clock[0] * 10**9))


def _summary(result: LoadResult) -> dict[str, Any]:
    policy = result.policy
    return {
        "objects": {obj.key: obj for obj in policy},
        "sources": dict(policy.sources),
        "credentials": dict(policy.credentials),
        "diagnostics": result.diagnostics,
        "kept": result.kept,
        "excluded": result.excluded,
    }


def _history_free(result: LoadResult) -> bool:
    return not result.kept and not result.excluded and not any(
        d.message.startswith("duplicate ") or "half-written" in d.message for d in result.diagnostics
    )


@pytest.mark.parametrize("seed", range(12))
def test_incremental_loads_equal_full_loads_after_random_edits(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    root = tmp_path / "policy"
    (root / "sub").mkdir(parents=True)
    names = ["a.yaml", "b.yaml", "sub/c.yaml", "d.yml"]
    for name in names[:3]:
        (root / name).write_text(_file(rng))
    clock = [1_600_000_000]
    incremental, full = PolicyStore(root), PolicyStore(root, incremental=False)
    fresh_compared = 0
    for step in range(30):
        if step % 10 == 9:
            # every file valid, no duplicates: what was served before no longer matters
            for name in names:
                (root / name).write_text(_file(rng, prefix=name.replace("/", "-").split(".")[0]))
        got, want = incremental.load(), full.load()
        assert _summary(got) == _summary(want), f"seed {seed}, step {step}"
        assert incremental.loaded_fingerprint == full.loaded_fingerprint
        if _history_free(want):
            assert _summary(PolicyStore(root).load()) == _summary(want), f"seed {seed}, step {step}"
            fresh_compared += 1
        for _ in range(rng.randrange(1, 3)):
            _edit(rng, root, names, clock)
    assert fresh_compared > 0


def test_a_no_op_reload_parses_only_the_touched_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for index in range(5):
        (tmp_path / f"f{index}.yaml").write_text(_service(f"s{index}", HOSTS[index], 9000 + index))
        os.utime(tmp_path / f"f{index}.yaml", ns=(10**18, 10**18))  # old: the stat can be trusted
    store = PolicyStore(tmp_path)
    first = store.load()
    parsed: list[str] = []
    decode = policystore.decode_file

    def counting(file: str, text: str, memo: Any = None) -> Any:
        parsed.append(Path(file).name)
        return decode(file, text, memo)

    monkeypatch.setattr(policystore, "decode_file", counting)
    validated: list[int] = []
    validate = policystore.validate_policy
    monkeypatch.setattr(policystore, "validate_policy",
                        lambda policy: validated.append(1) or validate(policy))
    assert store.load().policy is first.policy  # nothing changed: not read, not parsed, not validated
    assert (parsed, validated) == ([], [])
    (tmp_path / "f2.yaml").write_text(_service("s2", HOSTS[2], 9002) + "# a comment\n")
    second = store.load()
    assert parsed == ["f2.yaml"] and validated == []  # same objects at the same lines
    assert second.policy is first.policy
    (tmp_path / "f3.yaml").write_text(_service("s3", HOSTS[3], 9999))
    third = store.load()
    assert parsed == ["f2.yaml", "f3.yaml"] and validated == [1]
    key = ObjectKey("ServiceEntry", "default", "s0")
    assert third.policy[key] is first.policy[key]  # an unchanged file keeps its instances


def test_a_racily_written_file_is_read_again(tmp_path: Path) -> None:
    """A file written within the racy window of its read may change again with the same stat signature
    (same size, within one timestamp tick): the store reads it again instead of trusting the stat."""
    path = tmp_path / "a.yaml"
    path.write_text(_service("a", HOSTS[0], 9001))
    store = PolicyStore(tmp_path)
    assert store.load().policy.get("ServiceEntry", "default", "a") is not None
    stat = path.stat()
    path.write_text(_service("b", HOSTS[0], 9001))  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    names = [obj.metadata.name for obj in store.load().policy]
    assert names == ["b"]


def test_the_full_path_is_available_as_reference(tmp_path: Path) -> None:
    shutil.copytree(Path(__file__).parents[2] / "config", tmp_path / "config")
    incremental, full = PolicyStore(tmp_path / "config"), PolicyStore(tmp_path / "config", incremental=False)
    assert _summary(incremental.load()) == _summary(full.load())
    assert _summary(incremental.load()) == _summary(full.load())
