"""Pieces of the telemetry end-to-end tests: trace receivers, a trace-propagating hop app, sidecars with an
inbound listener, workload labels and environment variables, and an ingress gateway.

- `OtlpReceiver`: an OTLP/gRPC TraceService (the OpenTelemetry collector's own protocol, from
  `opentelemetry-proto`) on 127.0.0.1:<OS port>, keeping every span it is sent.
- `ZipkinReceiver`: an HTTP server accepting Zipkin v2 JSON on `POST /api/v2/spans`.
- `HopApp`: an HTTP app that answers, and — when it has a next hop — first calls the next service through
  its sidecar's outbound listener, copying the trace headers of the request it got (what instrumented
  apps do; without it every hop would start a trace of its own).
- `Sidecar`: a real Envoy from `controlplane bootstrap` with labels, an inbound listener and the app's
  port; `IngressGateway`: the same bootstrapped as an ingress gateway, with the Gateway and VirtualService
  YAML that give it an HTTP server. The bootstrap gets a runtime layer that makes tracers flush every
  100 ms (instead of 5 s) so tests wait less, and Envoy flushes access log files every 100 ms (instead of
  10 s). A listener update leaves open connections on the old filter chain until it drains (A's pooled
  connections to B's inbound listener would keep reporting with the old tracer), so the drain time is 1 s
  and `drained()` says when no old filter chain is left.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.e2e.mesh import PYTHON, Reply
from tests.harness import LOOPBACK, GiveUp, ManagedProcess, ProcessGroup, free_port, wait_until

# What an app forwards so that the next hop joins the trace (W3C, B3, Envoy's request id) and the
# correlation id the access logs carry.
TRACE_HEADERS = (
    "traceparent",
    "tracestate",
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "x-correlation-id",
)

FLUSH_RUNTIME = {
    "tracing.opentelemetry.flush_interval_ms": 100,
    "tracing.opentelemetry.min_flush_spans": 1,
    "tracing.zipkin.flush_interval_ms": 100,
    "tracing.zipkin.min_flush_spans": 1,
}


@dataclass(frozen=True)
class Span:
    """A received span in receiver-neutral terms (ids as lower-case hex; empty parent for a root)."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    service: str
    tags: Mapping[str, str]


class _SpanStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        self._last = time.monotonic()

    def add(self, spans: list[Span]) -> None:
        with self._lock:
            self._spans.extend(spans)
            self._last = time.monotonic()

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    def quiet_for(self) -> float:
        with self._lock:
            return time.monotonic() - self._last

    def settle(self, quiet: float = 1.0, timeout: float = 15.0) -> list[Span]:
        """The spans, once none has arrived for `quiet` seconds (tracers flush every 100 ms here)."""
        started = time.monotonic()
        wait_until(
            lambda: time.monotonic() - started >= quiet and self.quiet_for() >= quiet,
            timeout=timeout,
            interval=0.1,
            what="the span stream to go quiet",
        )
        return self.spans()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Span]:
        return wait_until(
            lambda: self.spans() if len(self.spans()) >= count else None,
            timeout=timeout,
            what=f"{count} spans",
            describe=lambda: repr(self.spans()),
        )


def _scope_spans(resource_spans: Any) -> Any:
    """ResourceSpans field 2. xds-protos ships an older copy of the OTLP protos into the same
    `opentelemetry.proto` package, where that field (same number, same wire layout) is still called
    `instrumentation_library_spans`; whichever package pip installed last provides the module."""
    fields = resource_spans.DESCRIPTOR.fields_by_number
    return getattr(resource_spans, fields[2].name)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: _SpanStore) -> None:
        self.store = store

    def Export(self, request: Any, context: Any) -> Any:
        spans: list[Span] = []
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in _scope_spans(resource_spans):
                for span in scope.spans:
                    tags = {a.key: _otlp_value(a.value) for a in span.attributes}
                    spans.append(
                        Span(
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.name,
                            _OTLP_KINDS.get(span.kind, str(span.kind)),
                            attributes.get("service.name", ""),
                            tags,
                        )
                    )
        self.store.add(spans)
        return trace_service_pb2.ExportTraceServiceResponse()


_OTLP_KINDS = {2: "SERVER", 3: "CLIENT"}


def _otlp_value(value: Any) -> str:
    kind = value.WhichOneof("value")
    return "" if kind is None else str(getattr(value, kind))


class OtlpReceiver(_SpanStore):
    """An OTLP/gRPC trace collector on 127.0.0.1:`port`."""

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)
        self._server.add_insecure_port(f"{LOOPBACK}:{self.port}")
        self._server.start()

    def close(self) -> None:
        self._server.stop(grace=None).wait(5)


class _ZipkinHandler(BaseHTTPRequestHandler):
    server: _ZipkinServer
    protocol_version = "HTTP/1.0"

    def do_POST(self) -> None:
        body = self._body()
        if self.path != "/api/v2/spans":
            self.send_response(404)
        else:
            self.server.store.add([_zipkin_span(item) for item in json.loads(body)])
            self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = b""
        while True:  # Envoy's async HTTP client may stream the span batch in chunks
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                self.rfile.readline()
                return body
            body += self.rfile.read(size)
            self.rfile.readline()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _zipkin_span(item: dict[str, Any]) -> Span:
    service = item.get("localEndpoint", {}).get("serviceName", "")
    return Span(
        item["traceId"],
        item["id"],
        item.get("parentId", ""),
        item.get("name", ""),
        item.get("kind", ""),
        service,
        {k: str(v) for k, v in item.get("tags", {}).items()},
    )


class _ZipkinServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    store: _SpanStore


class ZipkinReceiver(_SpanStore):
    """A Zipkin collector (HTTP JSON v2) on 127.0.0.1:`port`."""

    def __init__(self) -> None:
        super().__init__()
        self._server = _ZipkinServer((LOOPBACK, 0), _ZipkinHandler)
        self._server.store = self
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- the app ------------------------------------------------------------------------------------------


class _HopHandler(BaseHTTPRequestHandler):
    server: _HopServer
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        received = {k.lower(): v for k, v in self.headers.items()}
        reply: dict[str, Any] = {"app": self.server.name, "headers": received}
        status = 200
        if self.server.next_hop is not None:
            host, port = self.server.next_hop
            headers = {name: received[name] for name in TRACE_HEADERS if name in received}
            headers["Host"] = host
            conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
            try:
                conn.request("GET", self.path, headers=headers)
                response = conn.getresponse()
                status = response.status
                reply["next"] = json.loads(response.read() or b"null")
            finally:
                conn.close()
        body = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HopServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    name = ""
    next_hop: tuple[str, int] | None = None


class HopApp:
    """An app on 127.0.0.1:`port`; with `next_hop` (Host, sidecar outbound port) it calls that first."""

    def __init__(self, name: str, next_hop: tuple[str, int] | None = None) -> None:
        self._server = _HopServer((LOOPBACK, 0), _HopHandler)
        self._server.name = name
        self._server.next_hop = next_hop
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- sidecars -----------------------------------------------------------------------------------------


@dataclass
class Sidecar:
    """A real Envoy sidecar with an inbound listener in front of `app_port`."""

    name: str
    app_port: int
    labels: Mapping[str, str]
    env: Mapping[str, str] = field(default_factory=dict)
    admin_port: int = field(default_factory=free_port)
    outbound_port: int = field(default_factory=free_port)
    inbound_port: int = field(default_factory=free_port)
    prometheus_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    def start(self, binary: str, processes: ProcessGroup, work_dir: Path, xds_address: str) -> None:
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        argv = [
            PYTHON,
            "-m",
            "controlplane",
            "bootstrap",
            "--node-id",
            self.name,
            "--xds-address",
            xds_address,
            "--admin-address",
            f"{LOOPBACK}:{self.admin_port}",
            "--labels",
            labels,
            "--prometheus-address",
            f"{LOOPBACK}:{self.prometheus_port}",
            *self.role_args(),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, f"controlplane bootstrap failed: {done.stderr}"
        bootstrap = yaml.safe_load(done.stdout)
        bootstrap["layered_runtime"] = {"layers": [{"name": "test", "static_layer": FLUSH_RUNTIME}]}
        path = work_dir / f"{self.name}.bootstrap.yaml"
        path.write_text(yaml.safe_dump(bootstrap))
        self.process = process = processes.start(
            f"envoy-{self.name}",
            [
                binary,
                "-c",
                str(path),
                "--disable-hot-restart",
                "--log-level",
                "warning",
                "--concurrency",
                "1",
                "--file-flush-interval-msec",
                "100",
                "--drain-time-s",
                "1",
            ],
            env=dict(self.env),
        )

        def live() -> bool:
            if not process.running():
                raise GiveUp(f"envoy exited with {process.returncode}: {process.output()[-2000:]}")
            return _get(self.admin_port, "/ready").body.strip() == b"LIVE"

        wait_until(live, timeout=20, what=f"envoy {self.name} to be LIVE")

    def role_args(self) -> list[str]:
        """The bootstrap flags that make this Envoy a sidecar of the app on `app_port`."""
        return [
            "--outbound-address",
            f"{LOOPBACK}:{self.outbound_port}",
            "--inbound-address",
            f"{LOOPBACK}:{self.inbound_port}",
            "--app-ports",
            str(self.app_port),
        ]

    def http_listeners(self) -> tuple[str, ...]:
        """The names of its listeners with an HTTP connection manager (where tracing is configured)."""
        return ("inbound_http", "outbound_http")

    def listener_config(self, name: str) -> dict[str, Any]:
        """The active HTTP connection manager config of listener `name`, as Envoy runs it."""
        dump = json.loads(_get(self.admin_port, "/config_dump?resource=dynamic_listeners").body)
        for config in dump["configs"]:
            if config.get("name") == name and "active_state" in config:
                manager: dict[str, Any] = config["active_state"]["listener"]["filter_chains"][0]["filters"][
                    0
                ]["typed_config"]
                return manager
        return {}

    def drained(self) -> bool:
        stats = _get(
            self.admin_port, "/stats?filter=^listener_manager.total_(filter_chains|listeners)_draining$"
        )
        values = [line.rpartition(": ")[2] for line in stats.body.decode().splitlines()]
        return bool(values) and all(value == "0" for value in values)

    def access_log(self) -> list[dict[str, Any]]:
        """Every JSON line the proxy wrote to stdout (its access log)."""
        assert self.process is not None
        lines = self.process.stdout_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@dataclass
class IngressGateway(Sidecar):
    """A real Envoy as an ingress gateway (`--role gateway` in namespace istio-system, readiness on
    `health_port`). It has no app: `app_port` is the port of its Gateway server's listener (the server's
    `targetPort`, bound on 127.0.0.1 by Envoy itself); the sidecar-only ports are unused."""

    namespace: str = "istio-system"
    health_port: int = field(default_factory=free_port)

    @property
    def http_port(self) -> int:
        return self.app_port

    def role_args(self) -> list[str]:
        return [
            "--role",
            "gateway",
            "--namespace",
            self.namespace,
            "--health-address",
            f"{LOOPBACK}:{self.health_port}",
        ]

    def http_listeners(self) -> tuple[str, ...]:
        return (f"{LOOPBACK}_{self.http_port}",)

    def gateway_yaml(self, host: str, destination: str) -> str:
        """A Gateway selecting this proxy (plain HTTP, Istio port 80 on `http_port`) and a VirtualService
        that sends `host` to `destination` port 80."""
        return f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: ingress, namespace: {self.namespace}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP, targetPort: {self.http_port}}}
    bind: {LOOPBACK}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ingress, namespace: {self.namespace}}}
spec:
  hosts: [{host}]
  gateways: [ingress]
  http:
  - route: [{{destination: {{host: {destination}, port: {{number: 80}}}}}}]
"""


def _get(port: int, path: str, headers: Mapping[str, str] | None = None) -> Reply:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        return Reply(response.status, response.read(), {k.lower(): v for k, v in response.getheaders()})
    finally:
        conn.close()


def request(port: int, path: str, headers: Mapping[str, str]) -> Reply:
    return _get(port, path, headers)
