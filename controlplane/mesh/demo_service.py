"""The demo service: one small asyncio HTTP app that can play any service of the mesh.

Every request is answered with JSON: the service name, version and instance id, the request (method, path,
query, headers) and a per-instance request counter. Per request, through a header or a query parameter:

    x-demo-fail: 503            ?fail=503           answer with that status instead of 200
    x-demo-fail-fraction: 0.5   ?fail_fraction=0.5  ... but only for that fraction of requests (default 1)
    x-demo-delay: 2s            ?delay=0.5          wait first (seconds, or "500ms" / "2s")
    x-demo-call: svc/path       ?call=svc/path      call another service through the sidecar and include
                                                    its answer (the response mirrors its status)

or through the path: `/fail/503/...`, `/delay/2s/...` and `/call/<service>/<path>` (multi-hop:
`/call/b/call/c/x`). Calls go to the sidecar's outbound listener (`--proxy`) with `Host: <service>` and
carry the trace headers of the incoming request (x-request-id, traceparent, B3), as a real app must for
traces to join up.

Run: `python -m controlplane.mesh.demo_service --service reviews --listen 127.0.0.1:9080 --proxy
127.0.0.1:15001` (several `--listen` for a service with several ports).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web

log = logging.getLogger("demo")

# Headers an app must copy from its incoming request to its outgoing calls so that Envoy's traces join up
# (https://istio.io/latest/docs/tasks/observability/distributed-tracing/overview/).
TRACE_HEADERS = (
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "baggage",
)
CALL_TIMEOUT = 30.0


@dataclass
class Identity:
    service: str
    version: str = "v1"
    instance: str = ""
    proxy: str | None = None  # HOST:PORT of the sidecar's outbound listener
    served: int = field(default=0)


def parse_delay(text: str) -> float:
    """Seconds from "0.5", "500ms", "2s" or "1m"; ValueError otherwise."""
    text = text.strip().lower()
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)


@dataclass(frozen=True)
class Instructions:
    """What one request asks the demo service to do."""

    fail: int | None = None
    fail_fraction: float = 1.0
    delay: float = 0.0
    call: str | None = None  # "service[:port]/path"


def read_instructions(
    path: str, headers: Mapping[str, str], query: Mapping[str, str], query_string: str = ""
) -> Instructions:
    """From path prefixes, headers (`x-demo-*`) and query parameters. ValueError on bad values. With a
    path-form call (`/call/svc/path?q`) the query string belongs to the call, not to this hop."""
    parts = path.lstrip("/").split("/")
    from_path: dict[str, str] = {}
    while len(parts) >= 2 and parts[0] in ("fail", "delay"):
        from_path[parts[0]] = parts[1]
        parts = parts[2:]
    if len(parts) >= 2 and parts[0] == "call":
        from_path["call"] = "/".join(parts[1:]) + (f"?{query_string}" if query_string else "")
        query = {}

    def pick(name: str) -> str | None:
        return from_path.get(name) or headers.get(f"x-demo-{name.replace('_', '-')}") or query.get(name)

    fail, delay, fraction = pick("fail"), pick("delay"), pick("fail_fraction")
    status = int(fail) if fail else None
    if status is not None and not 100 <= status <= 599:
        raise ValueError(f"fail: expected an HTTP status, got {status}")
    return Instructions(
        fail=status,
        fail_fraction=float(fraction) if fraction else 1.0,
        delay=parse_delay(delay) if delay else 0.0,
        call=pick("call"),
    )


async def call_service(
    session: ClientSession, proxy: str, target: str, incoming: Mapping[str, str]
) -> tuple[int, Any]:
    """GET http://<proxy>/<path> with Host: <service>; (status, JSON body or text)."""
    host, _, path = target.partition("/")
    headers = {name: incoming[name] for name in TRACE_HEADERS if name in incoming}
    headers["Host"] = host
    try:
        async with session.get(f"http://{proxy}/{path}", headers=headers, allow_redirects=False) as reply:
            text = await reply.text()
            try:
                body: Any = json.loads(text)
            except ValueError:
                body = text
            return reply.status, body
    except (ClientError, TimeoutError) as exc:
        return 502, f"call to {host} through {proxy} failed: {exc!r}"


def make_app(identity: Identity) -> web.Application:
    app = web.Application()
    sessions: list[ClientSession] = []

    async def handle(request: web.Request) -> web.Response:
        identity.served += 1
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            todo = read_instructions(request.path, headers, request.query, request.query_string)
        except ValueError as exc:
            return web.json_response({"service": identity.service, "error": str(exc)}, status=400)
        if todo.delay > 0:
            await asyncio.sleep(todo.delay)
        body: dict[str, Any] = {
            "service": identity.service,
            "version": identity.version,
            "instance": identity.instance,
            "served": identity.served,
            "method": request.method,
            "path": request.path_qs,
            "headers": dict(sorted(headers.items())),
        }
        status = 200
        if todo.fail is not None and random.random() < todo.fail_fraction:
            status = todo.fail
        elif todo.call:
            if identity.proxy is None:
                return web.json_response({**body, "error": "no --proxy to call through"}, status=500)
            if not sessions:
                sessions.append(ClientSession(timeout=ClientTimeout(total=CALL_TIMEOUT)))
            status, called = await call_service(sessions[0], identity.proxy, todo.call, headers)
            body["called"] = {"target": todo.call, "status": status, "body": called}
        log.info("%s %s -> %d", request.method, request.path_qs, status)
        return web.json_response(body, status=status)

    async def close_sessions(_: web.Application) -> None:
        for session in sessions:
            await session.close()

    app.router.add_route("*", "/{tail:.*}", handle)
    app.on_cleanup.append(close_sessions)
    return app


async def serve(identity: Identity, listen: Sequence[tuple[str, int]]) -> None:
    """Serve on every address until SIGTERM or SIGINT."""
    runner = web.AppRunner(make_app(identity), access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        for host, port in listen:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        log.info(
            "%s (%s, instance %s) listening on %s, calling through %s",
            identity.service,
            identity.version,
            identity.instance,
            ", ".join(f"{h}:{p}" for h, p in listen),
            identity.proxy or "nothing",
        )
        await stop.wait()
    finally:
        await runner.cleanup()


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="demo_service", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--service", required=True, help="the service name it answers with")
    parser.add_argument("--version", default="v1")
    parser.add_argument("--instance", default="", help="instance id (default: SERVICE-PORT)")
    parser.add_argument("--listen", action="append", type=_address, required=True, help="HOST:PORT")
    parser.add_argument("--proxy", help="HOST:PORT of the sidecar's outbound listener, for calls")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    instance = args.instance or f"{args.service}-{args.listen[0][1]}"
    identity = Identity(args.service, args.version, instance, args.proxy)
    try:
        asyncio.run(serve(identity, args.listen))
    except OSError as exc:  # most often: the address is in use
        log.error("cannot listen: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
