"""`make dev-up` checks for docker, its compose plugin and the daemon before using them, and says what to
install (it used to print docker's "unknown shorthand flag: 'f' in -f" when the plugin was missing). A fake
`docker` on PATH plays each case."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make")

pytestmark = pytest.mark.skipif(MAKE is None, reason="no make")


def fake_docker(bin_dir: Path, *, compose: bool, daemon: bool) -> Path:
    """A `docker` that answers like the real CLI without the plugin / without a daemon, logging its args."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    calls = bin_dir / "calls"
    no_plugin = "echo \"unknown shorthand flag: 'f' in -f\" >&2; exit 125"
    no_daemon = 'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2; exit 1'
    script = f"""#!/bin/sh
echo "$*" >> {calls}
if [ "$1" = compose ]; then
    {"" if compose else no_plugin}
    exit 0
fi
if [ "$1" = info ]; then
    {"exit 0" if daemon else no_daemon}
fi
exit 0
"""
    docker = bin_dir / "docker"
    docker.write_text(script)
    docker.chmod(0o755)
    return calls


def dev_up(path: str) -> subprocess.CompletedProcess[str]:
    assert MAKE is not None
    env = {**os.environ, "PATH": path}
    # the stamp target would build a venv: the check runs before anything else in dev-up
    return subprocess.run([MAKE, "-s", "-C", str(REPO), "dev-up"], capture_output=True, text=True, env=env,
                          timeout=60, check=False)


def test_without_docker(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    done = dev_up(f"{empty}:/usr/bin:/bin")
    if shutil.which("docker", path="/usr/bin:/bin"):
        pytest.skip("docker is installed in /usr/bin")
    assert done.returncode != 0
    assert "docker is not installed" in done.stderr and "docs.docker.com/engine/install" in done.stderr


def test_without_the_compose_plugin(tmp_path: Path) -> None:
    calls = fake_docker(tmp_path / "bin", compose=False, daemon=True)
    done = dev_up(f"{tmp_path / 'bin'}:/usr/bin:/bin")
    assert done.returncode != 0
    assert "compose plugin is not" in done.stderr and "docker-compose-plugin" in done.stderr, done.stderr
    assert "unknown shorthand flag" not in done.stderr
    assert "up --build" not in calls.read_text()


def test_without_a_daemon(tmp_path: Path) -> None:
    fake_docker(tmp_path / "bin", compose=True, daemon=False)
    done = dev_up(f"{tmp_path / 'bin'}:/usr/bin:/bin")
    assert done.returncode != 0
    assert "Docker daemon is not reachable" in done.stderr and "Cannot connect" in done.stderr, done.stderr
    assert "systemctl start docker" in done.stderr


def test_with_everything_it_brings_the_stack_up(tmp_path: Path) -> None:
    calls = fake_docker(tmp_path / "bin", compose=True, daemon=True)
    done = dev_up(f"{tmp_path / 'bin'}:/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    assert "compose -f compose/docker-compose.yml up --build --detach" in calls.read_text().splitlines()
