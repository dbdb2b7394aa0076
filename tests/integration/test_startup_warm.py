"""The startup warm-up (app.py `_warm` for a plain sidecar) runs once, after the xDS and admin servers
listen: begun before, it competed with their start for the GIL and put /readyz later."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from controlplane import app as app_module
from controlplane.app import ControlPlane, Settings
from tests.harness import free_port

SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec:
  hosts: [a.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
"""


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.asyncio
async def test_the_startup_warm_up_runs_once_after_both_servers_listen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.yaml").write_text(SERVICE)
    admin_port = free_port()
    plane = ControlPlane(Settings(tmp_path, xds_address="127.0.0.1:0",
                                  admin_address=f"127.0.0.1:{admin_port}", watch=False))
    seen: list[tuple[bool, bool]] = []
    warm = app_module._warm

    def recording(*args: Any, **kwargs: Any) -> None:
        seen.append((_listening(admin_port), _listening(plane.xds.port)))
        warm(*args, **kwargs)

    monkeypatch.setattr(app_module, "_warm", recording)
    await plane.start()
    try:
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert seen == [(True, True)]
        await plane.reload()  # a reload with no proxy warms at once (the servers are up)
        for _ in range(200):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(seen) == 2
    finally:
        await plane.close()
