"""Telemetry end to end, with real Envoys: traces over OTLP/gRPC and Zipkin, sampling, per-workload
overrides, JSON access logs, live edits, and the Prometheus endpoint.

One control plane, an ingress gateway and two sidecars for the whole module (pieces in telemetry_mesh.py):

    client ─▶ sidecar A inbound ─▶ app A ─▶ sidecar A outbound ─▶ sidecar B inbound ─▶ app B
              (server span)                 (client span)          (server span)

App A calls svc-b.test through its sidecar and forwards the trace headers it got, so one request is one
trace of three spans: A inbound (root) → A outbound → B inbound. A request through the ingress gateway
(Host shop.test → svc-a.test) is one trace of four: the gateway's client span (root) → A inbound → A
outbound → B inbound. Each test writes the Telemetry it needs, waits until the Envoys run it, and only
then sends traffic.
"""

from __future__ import annotations

import uuid
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.mesh import ControlPlane
from tests.e2e.telemetry_mesh import (
    HopApp,
    IngressGateway,
    OtlpReceiver,
    Sidecar,
    Span,
    ZipkinReceiver,
    request,
)
from tests.harness import LOOPBACK, ProcessGroup, free_port, wait_until

pytestmark = pytest.mark.e2e

TAGS = """\
    customTags:
      environment: {literal: {value: dev}}
      cluster: {literal: {value: vertice-dev}}
      x-correlation-id: {header: {name: x-correlation-id, defaultValue: none}}
      user-agent: {header: {name: user-agent}}
      service_version: {environment: {name: SERVICE_VERSION, defaultValue: unknown}}
      brain_region: {environment: {name: BRAIN_REGION, defaultValue: unknown}}
"""


@dataclass
class TelemetryMesh:
    control_plane: ControlPlane
    config_dir: Path
    otlp: OtlpReceiver
    zipkin: ZipkinReceiver
    a: Sidecar
    b: Sidecar
    app_a: HopApp
    gateway: IngressGateway

    def write(self, sampling: float, provider: str = "otel", workload: str = "") -> None:
        """Mesh-wide Telemetry with `sampling` (and `workload`: extra Telemetry YAML) in telemetry.yaml."""
        (self.config_dir / "telemetry.yaml").write_text(f"""\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mesh-default, namespace: istio-system}}
spec:
  tracing:
  - providers: [{{name: {provider}}}]
    randomSamplingPercentage: {sampling}
{TAGS}{workload}""")

    def apply(
        self,
        sampling: float,
        provider: str = "otel",
        workload: str = "",
        expect: Mapping[str, float] | None = None,
    ) -> None:
        """Write, reload, wait until every Envoy traces with the expected sampling (the gateway: the mesh
        default), then forget old spans."""
        self.write(sampling, provider, workload)
        self.control_plane.reload()
        self.wait_sampling({"gateway": sampling, **(expect or {"a": sampling, "b": sampling})}, provider)
        self.reset()

    def wait_sampling(self, expect: Mapping[str, float], provider: str = "otel") -> None:
        """Until each Envoy of `expect` ("a", "b", "gateway") runs `provider` at its sampling percentage."""
        tracer = "envoy.tracers.zipkin" if provider == "zipkin" else "envoy.tracers.opentelemetry"
        proxies: dict[str, Sidecar] = {"a": self.a, "b": self.b, "gateway": self.gateway}

        def applied() -> bool:
            for key, sampling in expect.items():
                proxy = proxies[key]
                for listener in proxy.http_listeners():
                    tracing = proxy.listener_config(listener).get("tracing", {})
                    if tracing.get("provider", {}).get("name") != tracer:
                        return False
                    if tracing.get("random_sampling", {}).get("value", 0) != sampling:
                        return False
            # connections accepted under the old configuration keep it until their filter chain drains
            return all(proxies[key].drained() for key in expect)

        wait_until(
            applied,
            timeout=20,
            what=f"sampling {expect} via {provider} on both Envoys",
            describe=lambda: repr(self.a.listener_config("inbound_http").get("tracing")),
        )

    def reset(self) -> None:
        for receiver in (self.otlp, self.zipkin):
            receiver.settle(quiet=0.5)
            receiver.clear()

    def send(self, path: str = "/chain", headers: Mapping[str, str] | None = None, to_b: bool = False) -> Any:
        sidecar, host = (self.b, "svc-b.test") if to_b else (self.a, "svc-a.test")
        reply = request(sidecar.inbound_port, path, {"Host": host, **(headers or {})})
        assert reply.status == 200, reply
        return reply.json()


def _services(a: Sidecar, b: Sidecar) -> str:
    def entry(name: str, port: int) -> str:
        return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.test]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: {LOOPBACK}, ports: {{http: {port}}}}}]
"""

    return entry("svc-a", a.inbound_port) + "---\n" + entry("svc-b", b.inbound_port)


def _mesh_config(otlp_port: int, zipkin_port: int) -> str:
    return f"""\
apiVersion: controlplane.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec:
  accessLogFile: /dev/stdout
  accessLogEncoding: JSON
  extensionProviders:
  - name: otel
    opentelemetry: {{service: {LOOPBACK}, port: {otlp_port}}}
  - name: zipkin
    zipkin: {{service: {LOOPBACK}, port: {zipkin_port}}}
  defaultProviders: {{tracing: [otel]}}
"""


INGRESS_HOST = "shop.test"  # what the ingress gateway routes to svc-a.test


@pytest.fixture(scope="module")
def tmesh(
    envoy_binary: str, module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory
) -> Generator[TelemetryMesh, None, None]:
    work = tmp_path_factory.mktemp("telemetry")
    config_dir = work / "config"
    config_dir.mkdir()
    otlp, zipkin = OtlpReceiver(), ZipkinReceiver()
    app_b = HopApp("b")
    a_outbound = free_port()
    app_a = HopApp("a", next_hop=("svc-b.test", a_outbound))
    a = Sidecar(
        "sidecar-a",
        app_a.port,
        {"app": "svc-a", "version": "v1"},
        env={"SERVICE_VERSION": "v1", "BRAIN_REGION": "cortex"},
        outbound_port=a_outbound,
    )
    b = Sidecar("sidecar-b", app_b.port, {"app": "svc-b", "version": "v2"}, env={"SERVICE_VERSION": "v2"})
    gateway = IngressGateway(
        "ingress-gateway",
        free_port(),
        {"app": "istio-ingressgateway", "istio": "ingressgateway"},
        env={"SERVICE_VERSION": "gw-1", "BRAIN_REGION": "edge"},
    )
    try:
        (config_dir / "services.yaml").write_text(_services(a, b))
        (config_dir / "mesh.yaml").write_text(_mesh_config(otlp.port, zipkin.port))
        (config_dir / "gateway.yaml").write_text(gateway.gateway_yaml(INGRESS_HOST, "svc-a.test"))
        mesh = TelemetryMesh(
            ControlPlane(module_processes, config_dir), config_dir, otlp, zipkin, a, b, app_a, gateway
        )
        mesh.write(100)
        mesh.control_plane.start()
        for proxy in (a, b, gateway):
            proxy.start(envoy_binary, module_processes, work, mesh.control_plane.xds_address)
        mesh.wait_sampling({"a": 100, "b": 100, "gateway": 100})
        yield mesh
    finally:
        for server in (otlp, zipkin, app_a, app_b):
            server.close()


def _chain(spans: list[Span], hops: int = 3) -> list[Span]:
    """The `hops` spans of one trace, root first, each the parent of the next (checked): A's server span,
    A's client span, B's server span — after the gateway's client span for a request through it."""
    assert len(spans) == hops, spans
    assert len({s.trace_id for s in spans}) == 1, spans
    assert len({s.span_id for s in spans}) == hops, spans
    (root,) = [s for s in spans if not s.parent_id]
    chain = [root]
    while len(chain) < hops:
        (child,) = [s for s in spans if s.parent_id == chain[-1].span_id]
        chain.append(child)
    return chain


def _traces(spans: list[Span]) -> dict[str, list[Span]]:
    traces: dict[str, list[Span]] = {}
    for span in spans:
        traces.setdefault(span.trace_id, []).append(span)
    return traces


def test_otlp_one_trace_with_parent_links_and_custom_tags(tmesh: TelemetryMesh) -> None:
    tmesh.apply(100)
    tmesh.send("/chain?otlp", {"x-correlation-id": "corr-otlp", "user-agent": "e2e-agent/1"})
    root, client, server = _chain(tmesh.otlp.wait_for(3))
    assert len(root.trace_id) == 32 and root.trace_id != "0" * 32
    assert (root.kind, client.kind, server.kind) == ("SERVER", "CLIENT", "SERVER")
    assert (root.service, client.service, server.service) == (
        "svc-a.default",
        "svc-a.default",
        "svc-b.default",
    )
    for span in (root, client, server):
        assert span.tags["environment"] == "dev" and span.tags["cluster"] == "vertice-dev"
        assert span.tags["x-correlation-id"] == "corr-otlp"  # the app forwards it
    # the app does not forward user-agent (apps send their own), so only the first hop has the client's
    assert root.tags["user-agent"] == "e2e-agent/1" and "user-agent" not in server.tags
    # environment tags come from each Envoy's own environment; B has no BRAIN_REGION
    assert (root.tags["service_version"], root.tags["brain_region"]) == ("v1", "cortex")
    assert (server.tags["service_version"], server.tags["brain_region"]) == ("v2", "unknown")


def test_zipkin_receives_the_same_trace_shape(tmesh: TelemetryMesh) -> None:
    tmesh.apply(100, provider="zipkin")
    tmesh.send("/chain?zipkin", {"x-correlation-id": "corr-zipkin"})
    root, client, server = _chain(tmesh.zipkin.wait_for(3))
    assert len(root.trace_id) == 32  # 128-bit trace ids, as Istio configures Zipkin
    assert (root.kind, client.kind, server.kind) == ("SERVER", "CLIENT", "SERVER")
    assert all(
        s.tags["x-correlation-id"] == "corr-zipkin" and s.tags["cluster"] == "vertice-dev"
        for s in (root, client, server)
    )
    assert tmesh.otlp.settle(quiet=0.5) == []


@pytest.mark.parametrize("provider", ["otel", "zipkin"])
def test_trace_starts_at_the_ingress_gateway(tmesh: TelemetryMesh, provider: str) -> None:
    tmesh.apply(100, provider=provider)
    headers = {"Host": INGRESS_HOST, "x-correlation-id": f"corr-gw-{provider}", "user-agent": "e2e-agent/2"}
    reply = request(tmesh.gateway.http_port, f"/chain?gateway-{provider}", headers)
    assert reply.status == 200, reply
    assert (reply.json()["app"], reply.json()["next"]["app"]) == ("a", "b")
    receiver = tmesh.otlp if provider == "otel" else tmesh.zipkin
    gateway, a_in, a_out, b_in = _chain(receiver.wait_for(4), hops=4)
    assert len(gateway.trace_id) == 32 and gateway.trace_id != "0" * 32
    # gateways report client spans (Istio's gateways are outbound proxies), sidecar inbound server spans
    assert [s.kind for s in (gateway, a_in, a_out, b_in)] == ["CLIENT", "SERVER", "CLIENT", "SERVER"]
    services = [s.service for s in (gateway, a_in, a_out, b_in)]
    # both providers name services <app>.<namespace>, as Istio does
    assert services == [
        "istio-ingressgateway.istio-system",
        "svc-a.default",
        "svc-a.default",
        "svc-b.default",
    ]
    for span in (gateway, a_in, a_out, b_in):
        assert span.tags["environment"] == "dev" and span.tags["cluster"] == "vertice-dev", span
        assert span.tags["x-correlation-id"] == f"corr-gw-{provider}", span
    # the gateway passes the client's user-agent on to A's sidecar; app A does not forward it to B
    assert gateway.tags["user-agent"] == a_in.tags["user-agent"] == "e2e-agent/2"
    assert "user-agent" not in b_in.tags
    # environment tags come from each Envoy's own environment
    assert [(s.tags["service_version"], s.tags["brain_region"]) for s in (gateway, a_in, b_in)] == [
        ("gw-1", "edge"),
        ("v1", "cortex"),
        ("v2", "unknown"),
    ]
    assert len(receiver.settle(quiet=0.3)) == 4  # nothing else arrives: one trace, four spans


@pytest.mark.parametrize(
    ("sampling", "requests", "low", "high"),
    [
        (0, 20, 0, 0),
        (100, 20, 20, 20),
        # 200 fair coin flips: mean 100, standard deviation ~7; 60..140 is more than 5 deviations either way
        (50, 200, 60, 140),
    ],
)
def test_sampling(tmesh: TelemetryMesh, sampling: float, requests: int, low: int, high: int) -> None:
    tmesh.apply(sampling)
    for _ in range(requests):
        tmesh.send("/sampled")
    traces = _traces(tmesh.otlp.settle(quiet=1.0))
    assert low <= len(traces) <= high, f"{len(traces)} of {requests} requests traced at {sampling}%"
    # the first hop decides; the others follow, so a sampled request is a whole trace
    assert all(len(spans) == 3 for spans in traces.values())


def test_workload_telemetry_overrides_the_mesh_default(tmesh: TelemetryMesh) -> None:
    workload = """\
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: svc-a, namespace: default}
spec:
  selector: {matchLabels: {app: svc-a}}
  tracing: [{randomSamplingPercentage: 100}]
"""
    tmesh.apply(0, workload=workload, expect={"a": 100, "b": 0})
    for _ in range(5):
        tmesh.send("/override")
    traces = _traces(tmesh.otlp.settle(quiet=1.0))
    # A samples everything; B follows A's decision for requests A started
    assert len(traces) == 5 and all(len(spans) == 3 for spans in traces.values())
    tmesh.reset()
    for _ in range(5):
        tmesh.send("/direct", to_b=True)
    assert tmesh.otlp.settle(quiet=1.0) == []  # requests that start at B: the mesh default, 0%


def test_access_log_lines_are_json_with_the_request_values(tmesh: TelemetryMesh) -> None:
    tmesh.apply(100)
    sent_id = str(uuid.uuid4())
    tmesh.send(
        "/logged?q=1", {"x-request-id": sent_id, "x-correlation-id": "corr-log", "user-agent": "log-agent/2"}
    )
    # Envoy keeps the caller's x-request-id but packs its sampling decision into the UUID's version digit
    # (9: sampled), so that every hop makes the same decision (as in Istio)
    request_id = sent_id[:14] + "9" + sent_id[15:]

    def lines() -> list[dict[str, Any]] | None:
        found = [
            line
            for line in tmesh.a.access_log() + tmesh.b.access_log()
            if line.get("request_id") == request_id
        ]
        return found if len(found) == 3 else None

    found = wait_until(lines, timeout=10, what="3 access log lines (A in, A out, B in)")
    required = {
        "start_time",
        "method",
        "path",
        "protocol",
        "response_code",
        "response_flags",
        "bytes_received",
        "bytes_sent",
        "duration",
        "upstream_service_time",
        "x_forwarded_for",
        "user_agent",
        "request_id",
        "correlation_id",
        "authority",
        "upstream_host",
    }
    for line in found:
        assert required <= set(line), sorted(required - set(line))
        assert (line["method"], line["path"], line["protocol"]) == ("GET", "/logged?q=1", "HTTP/1.1")
        assert (line["response_code"], line["response_flags"]) == (200, "-")
        assert line["correlation_id"] == "corr-log"
        assert line["bytes_sent"] > 0 and line["duration"] >= 0
    (a_in,) = [line for line in found if line["upstream_host"] == f"{LOOPBACK}:{tmesh.app_a.port}"]
    assert a_in["authority"] == "svc-a.test" and a_in["upstream_cluster"] == f"inbound|{tmesh.app_a.port}||"
    assert a_in["user_agent"] == "log-agent/2"
    assert sorted(line["authority"] for line in found) == ["svc-a.test", "svc-b.test", "svc-b.test"]


def test_live_edit_changes_sampling_without_restart(tmesh: TelemetryMesh) -> None:
    tmesh.apply(100)
    pids = [s.process.pid for s in (tmesh.a, tmesh.b) if s.process is not None]
    tmesh.send("/before")
    assert len(_chain(tmesh.otlp.wait_for(3))) == 3
    tmesh.reset()
    tmesh.write(0)  # no reload call: the server watches the file
    tmesh.wait_sampling({"a": 0, "b": 0})
    for _ in range(10):
        tmesh.send("/after")
    assert tmesh.otlp.settle(quiet=1.0) == []
    assert [s.process.pid for s in (tmesh.a, tmesh.b) if s.process is not None] == pids
    assert all(s.process is not None and s.process.running() for s in (tmesh.a, tmesh.b))


def test_prometheus_endpoint_of_every_envoy(tmesh: TelemetryMesh) -> None:
    for sidecar in (tmesh.a, tmesh.b):
        reply = request(sidecar.prometheus_port, "/stats/prometheus", {})
        assert reply.status == 200
        assert b"# TYPE envoy_server_live gauge" in reply.body
        assert b'envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="inbound_http"}' in reply.body
        # only the metrics path: the admin interface's other endpoints stay on the loopback admin port
        assert request(sidecar.prometheus_port, "/config_dump", {}).status == 404
