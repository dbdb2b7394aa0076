"""Files: only regular files are read, limits are on bytes read, and a big reload never stalls the loop.

On main a FIFO named x.yaml froze the event loop until something wrote to it, a symlink to /dev/zero was
read until MemoryError, YAML tags crashed `validate`, and a 1.5 MB policy blocked health checks and xDS
for 9.3 s per reload."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from controlplane.api.loader import load_policy_dir
from controlplane.app import ControlPlane, Settings
from controlplane.policystore import PolicyStore
from tests.harness import free_port

SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ok}
spec:
  hosts: [ok]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
"""


def special_files(root: Path) -> list[str]:
    """A FIFO, a Unix socket and a symlink to /dev/zero, all named like policy files."""
    os.mkfifo(root / "fifo.yaml")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.yaml"))
    sock.close()
    (root / "zero.yaml").symlink_to("/dev/zero")
    return ["fifo.yaml", "sock.yaml", "zero.yaml"]


def test_special_files_are_diagnostics_never_opened(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(SERVICE)
    names = special_files(tmp_path)
    started = time.monotonic()
    policy, diagnostics = load_policy_dir(tmp_path)
    store_result = PolicyStore(tmp_path).load()
    assert time.monotonic() - started < 5
    for found in (diagnostics, store_result.diagnostics):
        assert sorted(Path(d.file).name for d in found) == names
        assert all("not a regular file" in d.message for d in found)
    assert len(policy) == len(store_result.policy) == 1


def test_validate_cli_refuses_special_files_tags_and_bombs(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(SERVICE)
    special_files(tmp_path)
    (tmp_path / "tags.yaml").write_text(SERVICE.replace("name: ok", "name: !!python/name:os.system x"))
    # "billion laughs": each level refers to the previous one nine times
    levels = [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)]
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(levels)
    (tmp_path / "bomb.yaml").write_text(bomb)
    (tmp_path / "deep.yaml").write_text("x: " + "[" * 50_000)
    (tmp_path / "big.yaml").write_text("# " + "x" * (5 * 1024 * 1024))
    run = subprocess.run([sys.executable, "-m", "controlplane", "validate", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    for name in ("fifo", "sock", "zero", "tags", "bomb", "deep", "big"):
        assert f"{name}.yaml:" in run.stdout, (name, run.stdout)


def big_policy(routes: int) -> str:
    head = SERVICE.replace("name: ok", "name: big").replace("[ok]", "[big]") + """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: big}
spec:
  hosts: [big]
  http:
"""
    return head + "".join(f"  - name: r{i}\n    match: [{{uri: {{prefix: /p{i}/}}}}]\n"
                          f"    route: [{{destination: {{host: big}}}}]\n    timeout: 5s\n"
                          for i in range(routes))


@pytest.mark.asyncio
async def test_a_big_reload_leaves_healthz_answering(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_text(big_policy(3000))  # ~330 KB: about a second to load
    plane = ControlPlane(Settings(tmp_path, xds_address="127.0.0.1:0",
                                  admin_address=f"127.0.0.1:{free_port()}", watch=False))
    await plane.start()
    try:
        url = f"http://127.0.0.1:{plane.admin.port}/healthz"
        async with aiohttp.ClientSession() as session:
            # a changed file (an unchanged one is not parsed again: policystore.py)
            (tmp_path / "big.yaml").write_text(big_policy(3001))
            started = time.monotonic()
            reload = asyncio.create_task(plane.reload())
            slowest, answered = 0.0, 0
            while not reload.done():
                asked = time.monotonic()
                async with session.get(url) as response:
                    assert response.status == 200
                slowest = max(slowest, time.monotonic() - asked)
                answered += 1
                await asyncio.sleep(0.02)
            took = time.monotonic() - started
            assert (await reload)["objects"] == 2
    finally:
        await plane.close()
    # the reload took long enough to tell (on main the loop was blocked for all of it)
    print("TOOK", took, slowest, answered)
    assert took > 0.5, took
    assert answered >= 5 and slowest < max(0.5, took / 3), (answered, slowest, took)
