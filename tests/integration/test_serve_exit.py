"""`controlplane serve` as a process: an idle server stops promptly on Ctrl-C (it used to spend 1-2 s in
the interpreter's finalization after everything was closed) and still logs its shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.harness import GiveUp, free_port, wait_until


def test_idle_serve_exits_promptly_on_sigint(tmp_path: Path) -> None:
    admin = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "controlplane", "serve", "--config", str(tmp_path),
             "--xds-address", f"127.0.0.1:{free_port()}", "--admin-address", f"127.0.0.1:{admin}"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        def ready() -> bool:
            if process.poll() is not None:
                raise GiveUp(f"serve exited with {process.returncode}:\n{log.read_text()}")
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1):
                return True

        wait_until(ready, timeout=30, interval=0.1, what="serve ready", describe=log.read_text)
        time.sleep(1.0)  # idle for a while, as after `make run` settles
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0, log.read_text()
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert took < 0.75, f"{took:.2f}s to exit"
    assert "shutting down" in log.read_text()
