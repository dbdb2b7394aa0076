"""PolicyStore: each object is applied on its own; an invalid one keeps its last valid version in effect,
and a file that cannot be used keeps what it served."""

from __future__ import annotations

from pathlib import Path

from controlplane.policystore import PolicyStore

SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.local]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
"""

BROKEN = SERVICE.replace("  resolution: STATIC\n", "  resolution: STATIC\n  bogusField: 1\n")


def _names(store: PolicyStore) -> tuple[list[str], list[str], list[str], list[str]]:
    result = store.load()
    return (
        sorted(obj.metadata.name for obj in result.policy),
        [f"{Path(d.file).name}:{d.line}:{d.field}" for d in result.diagnostics],
        [key.rsplit("/", 1)[1] for key in result.kept],
        [key.rsplit("/", 1)[1] for key in result.excluded],
    )


def test_invalid_file_at_startup_is_left_out_and_the_rest_served(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="a", port=9001))
    (tmp_path / "b.yaml").write_text(BROKEN.format(name="b", port=9002))
    names, diagnostics, kept, excluded = _names(PolicyStore(tmp_path))
    assert names == ["a"]
    assert diagnostics == ["b.yaml:1:-", "b.yaml:8:spec.bogusField"]
    assert (kept, excluded) == ([], ["b"])


def test_invalid_edit_keeps_the_last_valid_version(tmp_path: Path) -> None:
    store = PolicyStore(tmp_path)
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="a", port=9001))
    assert _names(store)[0] == ["a"]
    (tmp_path / "a.yaml").write_text(BROKEN.format(name="renamed", port=9001))
    names, diagnostics, kept, _ = _names(store)
    # a file with an invalid object deletes nothing (it may be half-written): "a" stays, "renamed" is
    # invalid and was never valid
    assert names == ["a"]
    assert diagnostics and kept == ["a"]
    # fixing the file applies it
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="renamed", port=9001))
    assert _names(store)[:3] == (["renamed"], [], [])


def test_deleting_a_file_removes_its_objects(tmp_path: Path) -> None:
    store = PolicyStore(tmp_path)
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="a", port=9001))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text(SERVICE.format(name="b", port=9002))
    assert _names(store)[0] == ["a", "b"]
    (tmp_path / "sub" / "b.yml").unlink()
    assert _names(store)[0] == ["a"]


def test_bad_files_are_diagnostics_and_lose_nothing(tmp_path: Path) -> None:
    """Binary, oversized, half-written and looping-symlink files: each a diagnostic, never a crash, and a
    file that was valid before keeps serving its last valid version."""
    store = PolicyStore(tmp_path)
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="a", port=9001))
    (tmp_path / "b.yaml").write_text(SERVICE.format(name="b", port=9002))
    assert _names(store)[0] == ["a", "b"]

    (tmp_path / "a.yaml").write_bytes(b"\x00\xff\xfe binary \x89PNG")
    half = SERVICE.format(name="b", port=9002)
    (tmp_path / "b.yaml").write_text(half[: len(half) // 2])  # an editor caught mid-write
    with open(tmp_path / "huge.yaml", "wb") as huge:
        huge.truncate(50 * 1024 * 1024)  # 50 MB, sparse
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    names, diagnostics, kept, excluded = _names(store)
    assert names == ["a", "b"]
    assert sorted(kept) == ["a", "b"]
    assert excluded == []
    assert {d.split(":")[0] for d in diagnostics} == {"a.yaml", "b.yaml", "huge.yaml", "loop.yaml"}


def test_a_merge_key_of_a_scalar_is_a_diagnostic_not_a_crash(tmp_path: Path) -> None:
    # PyYAML's constructor raises on `<<: x` (only mappings merge); that used to escape the whole load
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="a", port=9001))
    (tmp_path / "m.yaml").write_text(SERVICE.format(name="m", port=9002).replace(
        "  resolution: STATIC\n", "  resolution: STATIC\n  extra: {<<: x}\n"))
    names, diagnostics, _, excluded = _names(PolicyStore(tmp_path))
    assert names == ["a"]
    assert "m.yaml:8:spec.extra" in diagnostics and excluded == ["m"]
