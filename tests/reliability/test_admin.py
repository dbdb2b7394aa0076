"""Admin HTTP hardening: slowloris connections are closed, connections are limited, logs rate-limited, and
no state change comes from a cross-origin page (POST needs JSON from loopback, or the admin token).

On main, 1,000 half-open header connections were held for 70 s (none closed) and any web page could
POST /debug/reload (a "simple" cross-origin request needs no preflight)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import make_mocked_request

from controlplane.app import ControlPlane, Settings
from controlplane.ops.admin_guard import RateLimitFilter, _refusal
from tests.harness import free_port

TOKEN = "s3cret-token"


@pytest_asyncio.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    control = ControlPlane(Settings(tmp_path, xds_address="127.0.0.1:0",
                                    admin_address=f"127.0.0.1:{free_port()}", watch=False,
                                    admin_token=TOKEN))
    control.admin.listener.header_timeout = 0.5
    control.admin.listener.max_connections = 20
    await control.start()
    try:
        yield control
    finally:
        await control.close()


def _half_open(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never finished
    sock.setblocking(False)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


async def _healthz(port: int) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as reply:
        return reply.status


@pytest.mark.asyncio
async def test_slowloris_connections_are_closed_and_limited(plane: ControlPlane) -> None:
    port = plane.admin.port
    held = [_half_open(port) for _ in range(50)]  # more than the limit of 20
    try:
        deadline = time.monotonic() + 10
        while not all(_closed_by_server(s) for s in held if s.fileno() >= 0):
            assert time.monotonic() < deadline, "half-open connections were not closed"
            await asyncio.sleep(0.05)
        assert plane.admin.listener.refused >= 30 and plane.admin.listener.timed_out >= 1
        assert await _healthz(port) == 200  # and the server answers the next caller
        assert len(plane.admin.listener.connections) <= 1
    finally:
        for sock in held:
            sock.close()


@pytest.mark.asyncio
async def test_idle_keepalive_connection_is_closed(plane: ControlPlane) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", plane.admin.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        # the response, then nothing more: the server closes the idle connection (EOF)
        async with asyncio.timeout(5):
            while await reader.read(4096):
                pass
    finally:
        writer.close()


POSTS: list[tuple[str, dict[str, str], int]] = [
    ("no content type (a form or fetch from any page)", {}, 403),
    ("text/plain", {"Content-Type": "text/plain"}, 403),
    ("form", {"Content-Type": "application/x-www-form-urlencoded"}, 403),
    ("json from loopback", {"Content-Type": "application/json"}, 200),
    ("json with a cross-origin Origin", {"Content-Type": "application/json",
                                         "Origin": "http://evil.example"}, 403),
    ("json with a rebound Host", {"Content-Type": "application/json", "Host": "evil.example"}, 403),
    ("json, cross-site fetch metadata", {"Content-Type": "application/json",
                                         "Sec-Fetch-Site": "cross-site"}, 403),
    ("wrong token", {"Authorization": "Bearer nope"}, 403),
    ("the token", {"Authorization": f"Bearer {TOKEN}"}, 200),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("case", [c[0] for c in POSTS])
async def test_post_reload_needs_json_from_loopback_or_the_token(plane: ControlPlane, case: str) -> None:
    _, headers, status = next(c for c in POSTS if c[0] == case)
    url = f"http://127.0.0.1:{plane.admin.port}/debug/reload"
    async with aiohttp.ClientSession() as session, session.post(url, headers=headers) as reply:
        assert reply.status == status, await reply.text()


class _Transport:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 40000) if name == "peername" else default


def test_post_from_a_non_loopback_peer_needs_the_token() -> None:
    json = {"Content-Type": "application/json", "Host": "127.0.0.1:18001"}
    remote = make_mocked_request("POST", "/debug/reload", headers=json, transport=_Transport("10.1.2.3"))
    assert _refusal(remote, TOKEN) is not None
    assert _refusal(remote, None) is not None
    with_token = make_mocked_request("POST", "/debug/reload", transport=_Transport("10.1.2.3"),
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    assert _refusal(with_token, TOKEN) is None
    local = make_mocked_request("POST", "/debug/reload", headers=json, transport=_Transport("127.0.0.1"))
    assert _refusal(local, TOKEN) is None


def test_repeated_log_lines_are_rate_limited() -> None:
    limiter = RateLimitFilter(burst=5, interval=60)
    records = [logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "socket.accept() out of system "
                                 "resource", None, None) for _ in range(10_000)]
    assert sum(limiter.filter(r) for r in records) == 5
