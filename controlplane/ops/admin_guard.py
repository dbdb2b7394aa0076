"""Hardening of the admin HTTP server: connection limits and timeouts, state changes only on purpose.

Connections (`GuardedListener`, around aiohttp's own protocol):
- at most MAX_CONNECTIONS at once; more are closed on accept. 1,000 half-open connections once held the
  admin port (and, with a low file limit, starved new xDS streams of file descriptors);
- a request's headers must be complete HEADER_TIMEOUT seconds after the connection opened or the previous
  response was written, else the connection is closed (slowloris: aiohttp itself waits forever for a
  header line); an idle keep-alive connection is closed after the same time;
- repeated log lines (refused connections, asyncio's "out of system resource" on accept) are
  rate-limited: a full file table once wrote 92,936 lines in 5 s.

State changes (`post_guard`, a middleware): every method but GET/HEAD changes state (POST /debug/reload)
and must not be triggerable by a web page the operator happens to visit. Such a request is accepted with
`Authorization: Bearer <token>` (`serve --admin-token-file FILE`), or without it only when all hold:
from a loopback peer; `Content-Type: application/json` (not a "simple" type, so a cross-origin page
cannot send it without a CORS preflight, which this server never grants); a loopback `Host` (no DNS
rebinding); and no cross-site `Origin` / `Sec-Fetch-Site`.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 128
HEADER_TIMEOUT = 10.0
SAFE_METHODS = ("GET", "HEAD")
LOOPBACK_NAMES = ("localhost", "localhost.")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RateLimitFilter(logging.Filter):
    """At most `burst` records per message template every `interval` seconds; says how many it dropped."""

    def __init__(self, burst: int = 5, interval: float = 10.0) -> None:
        super().__init__()
        self.burst, self.interval = burst, interval
        self._windows: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        key = str(record.msg)
        started, count = self._windows.get(key, (now, 0))
        if now - started > self.interval:
            if count > self.burst:
                record.msg = f"{record.msg} (and {count - self.burst} more like it in {self.interval:.0f}s)"
            started, count = now, 0
        self._windows[key] = (started, count + 1)
        if len(self._windows) > 1000:  # templates are few; a flood of distinct ones resets the table
            self._windows.clear()
        return count < self.burst


def install_log_limits() -> None:
    """Rate-limit the loggers a connection flood writes to (idempotent)."""
    for name in ("asyncio", "aiohttp.server", "aiohttp.web", __name__):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
            logger.addFilter(RateLimitFilter())


class _Connection(asyncio.Protocol):
    """Forwards to aiohttp's protocol; closes the connection when its request headers take too long."""

    def __init__(self, listener: GuardedListener, inner: asyncio.Protocol) -> None:
        self._listener, self._inner = listener, inner
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if len(self._listener.connections) >= self._listener.max_connections:
            self._listener.refused += 1
            log.warning("admin server: connection limit (%d) reached; refusing connections",
                        self._listener.max_connections)
            transport.abort()
            return
        self._transport = transport
        self._listener.connections[transport] = self
        self.waiting()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._transport is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._transport is not None else None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return
        self._cancel()
        self._listener.connections.pop(self._transport, None)
        self._inner.connection_lost(exc)

    def waiting(self) -> None:
        """Waiting for a request's headers: they get HEADER_TIMEOUT seconds."""
        self._cancel()
        self._timer = asyncio.get_running_loop().call_later(self._listener.header_timeout, self._expire)

    def handling(self) -> None:
        self._cancel()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        if self._transport is not None:
            self._listener.timed_out += 1
            log.info("admin server: closing a connection that sent no complete request in %.0fs",
                     self._listener.header_timeout)
            self._transport.abort()


class GuardedListener:
    """The admin server's listening socket: aiohttp's protocol wrapped in `_Connection`."""

    def __init__(self, max_connections: int = MAX_CONNECTIONS,
                 header_timeout: float = HEADER_TIMEOUT) -> None:
        self.max_connections, self.header_timeout = max_connections, header_timeout
        self.connections: dict[asyncio.Transport, _Connection] = {}
        self.refused = self.timed_out = 0
        self._server: asyncio.Server | None = None

    async def start(self, runner: web.AppRunner, host: str, port: int) -> int:
        """Listen for `runner` (set up); returns the bound port (for port 0)."""
        install_log_limits()
        factory = runner.server
        assert factory is not None, "runner.setup() first"
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self, factory()), host, port,
                                                reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for transport in list(self.connections):
                transport.abort()
            await self._server.wait_closed()

    @web.middleware
    async def track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Tells the connection when a request is being handled (no header deadline meanwhile)."""
        transport = request.transport
        connection = self.connections.get(transport) if isinstance(transport, asyncio.Transport) else None
        if connection is not None:
            connection.handling()
        try:
            return await handler(request)
        finally:
            if connection is not None:
                connection.waiting()


def post_guard(token: str | None) -> Middleware:
    """The middleware that keeps state changes to deliberate callers (see the module docstring)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in SAFE_METHODS:
            refusal = _refusal(request, token)
            if refusal is not None:
                return web.json_response({"error": refusal}, status=403)
        return await handler(request)

    return guard


def _refusal(request: web.Request, token: str | None) -> str | None:
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        if token and hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
            return None
        return "invalid admin token"
    if not _is_loopback(_peer(request)):
        return "a state change from a non-loopback peer needs the admin token (Authorization: Bearer ...)"
    if request.content_type != "application/json":
        return "send Content-Type: application/json (or the admin token)"
    if not _is_loopback(_host_name(request.host)):
        return f"Host {request.host!r} is not a loopback address"
    origin = request.headers.get("Origin")
    if origin is not None and not _same_origin(origin, request.host):
        return f"cross-origin request from {origin!r}"
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return "cross-site request"
    return None


def _peer(request: web.Request) -> str:
    peer: Any = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def _host_name(host: str) -> str:
    """`127.0.0.1:18001` → `127.0.0.1`, `[::1]:18001` → `::1`."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _same_origin(origin: str, host: str) -> bool:
    scheme, _, rest = origin.partition("://")
    return scheme == "http" and rest == host
