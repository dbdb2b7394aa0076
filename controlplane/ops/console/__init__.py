"""The web console at the admin address: static HTML/CSS/JS (static/, shipped as package data; no build
step, no CDN), the JSON it reads under /debug/..., and a server-sent event stream that tells open pages
when something changed (they then fetch again). Read-only: every route is a GET.

    GET /                          the console
    GET /console/{file}            its script and style sheet
    GET /debug/proxies             /debug/syncz's rows with role, namespace and labels
    GET /debug/policy              every policy object: state, diagnostics, proxies it affects, resources
    GET /debug/proxy?node=ID       one proxy's resources (secrets redacted), origins, previous versions
    GET /debug/changes             the last reloads: files, resources, proxies and their ACK times
    GET /debug/graph               services and who may call them (from routes and TCP listeners)
    GET /debug/events              text/event-stream: `update` events when any of the above changed

`install()` is the only thing ops/admin.py calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from controlplane.ops.console import views
from controlplane.ops.console.views import ConsoleBackend

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
FILES = {"app.js": "text/javascript", "style.css": "text/css"}
# how often open pages are checked for news (the console must show a NACK within 2 s)
TICK_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0
# the page runs only its own script: an id with markup in it could not run even if it were not escaped
HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                                      "connect-src 'self'; img-src 'self' data:",
           "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=1) + "\n", status=status,
                        content_type="application/json", headers={"Cache-Control": "no-store"})


def _fingerprint(backend: ConsoleBackend) -> int:
    """Changes whenever anything a proxy row shows changes (cheap: no JSON)."""
    return hash(tuple(
        (s.stream_id, s.snapshot_version, tuple(
            (t, v.sent_version, v.acked_version, v.nacked_version, v.snapshot_version, v.nack_error)
            for t, v in s.types.items()))
        for s in backend.registry.streams.values()))


class Console:
    def __init__(self, backend: ConsoleBackend) -> None:
        self.backend = backend
        self.token = ""
        self._listeners: set[asyncio.Queue[str | None]] = set()

    async def close(self, _: web.Application) -> None:
        """End the open event streams (on the admin server's shutdown, which otherwise waits for them)."""
        for queue in self._listeners:
            queue.put_nowait(None)

    def tick(self) -> None:
        backend = self.backend
        backend.changes.observe(backend.registry, backend.cache)
        if not self._listeners:
            return
        token = f"{_fingerprint(backend)}:{backend.changes.generation}"
        if token != self.token:
            self.token = token
            for queue in self._listeners:
                queue.put_nowait(token)

    async def ticker(self, _: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(TICK_SECONDS)
                try:
                    self.tick()
                except Exception:  # the console must never take the admin server down
                    log.exception("console tick failed")

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def index(self, _: web.Request) -> web.Response:
        return web.Response(text=(STATIC / "index.html").read_text(), content_type="text/html",
                            headers=HEADERS)

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["file"]
        if name not in FILES:
            raise web.HTTPNotFound()
        return web.Response(text=(STATIC / name).read_text(), content_type=FILES[name], headers=HEADERS)

    async def proxies(self, _: web.Request) -> web.Response:
        return _json(views.proxies(self.backend))

    async def policy(self, _: web.Request) -> web.Response:
        return _json(views.policy(self.backend))

    async def proxy(self, request: web.Request) -> web.Response:
        node = request.query.get("node", "")
        found = views.proxy_config(self.backend, node)
        if found is None:
            return _json({"error": f"no connected proxy with node id {node!r}"}, status=404)
        return _json(found)

    async def changes(self, request: web.Request) -> web.Response:
        self.backend.changes.observe(self.backend.registry, self.backend.cache)
        try:
            limit = max(1, int(request.query.get("limit", "20")))
        except ValueError:
            return _json({"error": "limit must be a number"}, status=400)
        return _json(self.backend.changes.to_json(limit))

    async def graph(self, _: web.Request) -> web.Response:
        return _json(views.graph(self.backend))

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            await response.write(b"retry: 1000\n\n")
            while True:
                try:
                    token = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if token is None:
                    break
                await response.write(f"event: update\ndata: {json.dumps(token)}\n\n".encode())
        except ConnectionResetError:  # the page went away
            pass
        finally:
            self._listeners.discard(queue)
        return response


def install(app: web.Application, backend: object) -> None:
    """Add the console's routes to the admin server's application (no-op for a backend without the
    console's data, such as a test's fake)."""
    if not isinstance(backend, ConsoleBackend):
        return
    console = Console(backend)
    app.cleanup_ctx.append(console.ticker)
    app.on_shutdown.append(console.close)
    app.router.add_get("/", console.index)
    app.router.add_get("/console/{file}", console.static)
    app.router.add_get("/debug/proxies", console.proxies)
    app.router.add_get("/debug/policy", console.policy)
    app.router.add_get("/debug/proxy", console.proxy)
    app.router.add_get("/debug/changes", console.changes)
    app.router.add_get("/debug/graph", console.graph)
    app.router.add_get("/debug/events", console.events)
