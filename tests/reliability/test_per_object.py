"""Per-object application in the policy store, on a copy of the demo mesh's config/.

Each test is a reproduced "Why" of issue 11 that failed on main: one typo unapplied a whole file, a
non-UTF-8 or oversized edit lost the file's objects on the next reload, a copy in a file that sorts earlier
took the object over (with the diagnostic on the untouched file), YAML tags raised."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from controlplane.api.meta import ObjectKey
from controlplane.policystore import LoadResult, PolicyStore
from tests.reliability.policy_support import CONFIG

CORE = ObjectKey("VirtualService", "default", "maximus-core-service")
PREDICT = ObjectKey("VirtualService", "default", "maximus-predict")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    root = tmp_path / "config"
    shutil.copytree(CONFIG, root)
    return root


def keys(result: LoadResult) -> set[ObjectKey]:
    return {obj.key for obj in result.policy}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_one_invalid_object_leaves_its_neighbours_applied_at_cold_start(config: Path) -> None:
    edit(config / "routes.yaml", "attempts: 3", "attemps: 3")  # a typo in maximus-core-service
    result = PolicyStore(config).load()
    virtual_services = {key.name for key in keys(result) if key.kind == "VirtualService"}
    assert len(virtual_services) == 7 and CORE.name not in virtual_services  # 6 of routes.yaml + ingress
    assert result.excluded == [str(CORE)]
    messages = [d.message for d in result.diagnostics if d.name == CORE.name]
    assert any("never valid; not applied" in m for m in messages), messages


def test_invalid_edit_keeps_the_last_valid_version_across_many_reloads(config: Path) -> None:
    store = PolicyStore(config)
    before = store.load()
    served = {obj.key: obj for obj in before.policy}
    edit(config / "routes.yaml", "timeout: 30s", "timeout: 30 seconds")
    for _ in range(3):
        result = store.load()
        assert keys(result) == set(served)
        assert result.policy[CORE] == served[CORE]  # the last valid version, not a partial one
        assert result.kept == [str(CORE)]
        assert any("last valid version" in d.message and d.name == CORE.name for d in result.diagnostics)
    (config / "mesh.yaml").write_text((config / "mesh.yaml").read_text() + "\n# unrelated\n")
    assert store.load().policy[CORE] == served[CORE]


@pytest.mark.parametrize("damage", ["latin-1 byte", "oversized", "half-written", "syntax error", "fifo"])
def test_a_file_that_cannot_be_used_keeps_what_it_served(config: Path, damage: str) -> None:
    store = PolicyStore(config)
    served = keys(store.load())
    entries = sum(key.kind == "ServiceEntry" for key in served)
    services = config / "services.yaml"
    text = services.read_text()
    if damage == "latin-1 byte":
        # one latin-1 byte (0xe1, not valid UTF-8) in an otherwise UTF-8 file
        services.write_bytes(text.encode("utf-8").replace(b"maximus", b"m\xe1ximus", 1))
    elif damage == "oversized":
        services.write_text(text + "#" * (5 * 1024 * 1024))
    elif damage == "half-written":
        services.write_text(text[: len(text) // 3])
    elif damage == "syntax error":
        services.write_text(text + "\n- : [\n")
    else:
        services.unlink()
        import os

        os.mkfifo(services)
    # an unrelated edit elsewhere, then several reloads: nothing of services.yaml is lost
    edit(config / "routes.yaml", "# Core API", "# The core API")
    for _ in range(3):
        result = store.load()
        assert keys(result) == served
        assert any(d.file == str(services) for d in result.diagnostics)
        assert sum(key.kind == "ServiceEntry" for key in keys(result)) == entries >= 12


def test_a_copy_in_a_file_that_sorts_earlier_does_not_take_over(config: Path) -> None:
    store = PolicyStore(config)
    original = store.load().policy[CORE]
    routes = (config / "routes.yaml").read_text()
    first_document = routes.split("\n---\n")[0].replace("timeout: 30s", "timeout: 1s")
    (config / "aaa.yaml").write_text(first_document)
    result = store.load()
    assert result.policy[CORE] == original
    [duplicate] = [d for d in result.diagnostics if "duplicate" in d.message]
    assert Path(duplicate.file).name == "aaa.yaml"  # on the newcomer, never on the file nobody touched
    assert "routes.yaml" in duplicate.message
    # and it stays that way over later reloads; deleting the original lets the copy apply
    assert store.load().policy[CORE] == original
    edit(config / "routes.yaml", routes.split("\n---\n")[0] + "\n---\n", "")
    assert store.load().policy[CORE] != original


def test_duplicates_at_startup_first_by_path_wins(config: Path) -> None:
    routes = (config / "routes.yaml").read_text()
    (config / "zzz.yaml").write_text(routes.split("\n---\n")[0].replace("timeout: 30s", "timeout: 1s"))
    result = PolicyStore(config).load()
    assert result.policy[CORE].spec.http[0].timeout == 30_000  # type: ignore[attr-defined]
    assert [Path(d.file).name for d in result.diagnostics if "duplicate" in d.message] == ["zzz.yaml"]


@pytest.mark.parametrize("value", ["!!int x", "!custom x", "!!python/object:os.system x", "2001-02-30"])
def test_yaml_tags_and_unconstructible_values_are_diagnostics(config: Path, value: str) -> None:
    store = PolicyStore(config)
    served = keys(store.load())
    edit(config / "routes.yaml", "timeout: 30s", f"timeout: {value}")
    result = store.load()
    assert keys(result) == served
    assert result.kept == [str(CORE)]
    assert any(d.name == CORE.name and d.field == "spec.http[0].timeout" for d in result.diagnostics)
