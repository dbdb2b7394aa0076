"""Admin HTTP server (loopback by default): health, readiness, Prometheus metrics and debug endpoints.

    GET  /healthz                   the process is up
    GET  /readyz                    200 once the first policy load produced snapshots, else 503
    GET  /metrics                   Prometheus text format
    GET  /debug/syncz               per connected proxy and type: sent/ACKed versions, nonces, NACK text
    GET  /debug/config_dump?node=ID the resources that proxy gets, as Envoy JSON, with versions and the
                                    policy objects behind each (optional &type=clusters|endpoints|
                                    listeners|routes|secrets and &resource=NAME)
    GET  /debug/snapshots           proxy shapes, their versions, and which proxies use them
    GET  /debug/config              loaded policy files and current diagnostics
    POST /debug/reload              reload the policy directory now (as SIGHUP does)
    GET  /debug/authz?node=ID&...   would that proxy allow a request, and which policy decides
                                    (ops/authz_cli.py)
    GET  /  and /debug/...          the web console and its data (ops/console/)

Connection limits, timeouts and the rules for POST (a token, or JSON from loopback) are in admin_guard.py.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from aiohttp import web
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controlplane.api.policyset import PolicySet
from controlplane.ops import console
from controlplane.ops.admin_guard import HEADER_TIMEOUT, GuardedListener, post_guard
from controlplane.ops.authz_cli import authz_answer
from controlplane.ops.console.redact import redact
from controlplane.translate.resources import PUSH_ORDER, SHORT_NAMES
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.redact import redacted
from controlplane.xds.status import StatusRegistry

log = logging.getLogger(__name__)


class AdminBackend(Protocol):
    """What the admin server reads from the running control plane (app.py implements it)."""

    cache: SnapshotCache
    registry: StatusRegistry
    policy: PolicySet

    @property
    def ready(self) -> bool: ...

    def policy_report(self) -> dict[str, Any]: ...

    async def reload(self) -> dict[str, Any]: ...


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, indent=2, sort_keys=False) + "\n", status=status,
                        content_type="application/json")


class AdminServer:
    def __init__(self, backend: AdminBackend, host: str, port: int, token: str | None = None) -> None:
        self.backend = backend
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None
        self.listener = GuardedListener()
        app = web.Application(middlewares=[self.listener.track, post_guard(token)])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/debug/syncz", self._syncz)
        app.router.add_get("/debug/config_dump", self._config_dump)
        app.router.add_get("/debug/config", self._config)
        app.router.add_get("/debug/snapshots", self._snapshots)
        app.router.add_post("/debug/reload", self._reload)
        app.router.add_get("/debug/authz", self._authz)
        console.install(app, backend)
        self._app = app

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None, keepalive_timeout=HEADER_TIMEOUT)
        await self._runner.setup()
        self.port = await self.listener.start(self._runner, self.host, self.port)
        log.info("admin server listening on http://%s:%d", self.host, self.port)

    async def close(self) -> None:
        await self.listener.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        if self.backend.ready:
            return web.Response(text="ready\n")
        return web.Response(text="not ready: no policy loaded yet\n", status=503)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _syncz(self, _: web.Request) -> web.Response:
        cache = self.backend.cache
        per_shape: dict[Any, dict[str, str]] = {}

        def type_versions(identity: Any) -> dict[str, str]:  # once per shape, not per stream
            if identity not in per_shape:
                snapshot = cache.snapshot(identity)
                per_shape[identity] = {SHORT_NAMES[t]: snapshot.type_version_of(t)
                                       for t in PUSH_ORDER}
            return per_shape[identity]

        registry = self.backend.registry
        return _json(registry.to_json(lambda identity: cache.snapshot(identity).version, type_versions,
                                      lambda identity: cache.snapshot(identity).required_types()))

    async def _snapshots(self, _: web.Request) -> web.Response:
        nodes: dict[str, list[str]] = {}
        for status in self.backend.registry.streams.values():
            nodes.setdefault(status.identity.describe(), []).append(status.node_id)
        shapes = []
        for identity, (snapshot, streams) in sorted(self.backend.cache.shapes().items(),
                                                    key=lambda item: item[0].describe()):
            shapes.append({
                "shape": identity.describe(),
                "snapshot_version": snapshot.version,
                "streams": streams,
                "nodes": sorted(nodes.get(identity.describe(), [])),
                "versions": {SHORT_NAMES[t]: snapshot.type_version_of(t) for t in PUSH_ORDER},
                "resources": {SHORT_NAMES[t]: len(snapshot.of_type(t)) for t in PUSH_ORDER},
            })
        return _json(shapes)

    async def _config_dump(self, request: web.Request) -> web.Response:
        node = request.query.get("node", "")
        streams = self.backend.registry.by_node(node)
        if not streams:
            return _json({"error": f"no connected proxy with node id {node!r}"}, status=404)
        wanted = request.query.get("type")
        types = [t for t in PUSH_ORDER if wanted in (None, SHORT_NAMES[t])]
        if not types:
            return _json({"error": f"unknown type {wanted!r}; one of {sorted(SHORT_NAMES.values())}"},
                         status=400)
        only = request.query.get("resource")
        snapshot = self.backend.cache.snapshot(streams[0].identity)
        dump: dict[str, Any] = {"node": node, "proxy": streams[0].identity.describe(),
                                "snapshot_version": snapshot.version}
        for type_url in types:
            dump[SHORT_NAMES[type_url]] = [
                {"name": r.name, "version": r.version,
                 "origins": [str(o) for o in snapshot.origins_of(type_url, r.name)],
                 "resource": redact(json.loads(json_format.MessageToJson(redacted(type_url, r.message))))}
                for r in snapshot.of_type(type_url).values()
                if only in (None, r.name)
            ]
        return _json(dump)

    async def _authz(self, request: web.Request) -> web.Response:
        node = request.query.get("node", "")
        streams = self.backend.registry.by_node(node)
        if not streams:
            return _json({"error": f"no connected proxy with node id {node!r}"}, status=404)
        try:
            answer = authz_answer(self.backend.policy, streams[0].identity, request.query,
                                  request.query.getall("header", []))
        except ValueError as exc:
            return _json({"error": str(exc)}, status=400)
        return _json({"node": node, **answer})

    async def _config(self, _: web.Request) -> web.Response:
        return _json(self.backend.policy_report())

    async def _reload(self, _: web.Request) -> web.Response:
        return _json(await self.backend.reload())
