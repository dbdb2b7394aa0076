"""Telemetry and MeshConfig observability fields: validation (file:line:field), Istio's merge of mesh,
namespace and workload Telemetry, and what the HTTP connection managers get."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from controlplane.api.loader import load_policy_texts
from controlplane.api.policyset import PolicySet
from controlplane.model import build_proxy
from controlplane.model.identity import ProxyIdentity, SocketAddress
from controlplane.model.telemetry import LogEncoding, TagSource, TracerKind, build_telemetry
from controlplane.translate import names
from controlplane.translate.resources import CLUSTER, LISTENER
from controlplane.translate.translator import translate_proxy

MESH = """\
apiVersion: controlplane.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  accessLogFile: /dev/stdout
  accessLogEncoding: JSON
  extensionProviders:
  - name: otel
    opentelemetry: {service: otel-collector, port: 4317}
  - name: jaeger
    zipkin: {service: 127.0.0.1, port: 9411}
  defaultProviders: {tracing: [otel]}
"""


def telemetry(name: str, body: str, namespace: str = "default") -> str:
    return (
        f"---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{body}"
    )


def load(*docs: str) -> tuple[PolicySet, list[str]]:
    policy, diagnostics = load_policy_texts([("t.yaml", "".join(docs))])
    return policy, [str(d) for d in diagnostics]


def proxy(labels: str = "", namespace: str = "default") -> ProxyIdentity:
    pairs = tuple(sorted(tuple(item.split("=", 1)) for item in labels.split(",") if item))
    return ProxyIdentity(namespace=namespace, labels=pairs)  # type: ignore[arg-type]


MESH_WIDE = telemetry(
    "mesh",
    """\
  tracing:
  - randomSamplingPercentage: 10
    customTags:
      environment: {literal: {value: dev}}
      correlation: {header: {name: x-correlation-id}}
""",
    namespace="istio-system",
)


# --- bad input ----------------------------------------------------------------------------------------


def test_bad_telemetry_is_reported_with_line_and_field_and_the_rest_keeps_tracing() -> None:
    policy, diagnostics = load(
        MESH,
        telemetry(
            "unknown", "  selector: {matchLabels: {app: a}}\n  tracing:\n  - providers: [{name: zz}]\n"
        ),
        telemetry(
            "sampling", "  selector: {matchLabels: {app: b}}\n  tracing:\n  - randomSamplingPercentage: 101\n"
        ),
        telemetry(
            "tag", "  selector: {matchLabels: {app: c}}\n  tracing:\n  - customTags:\n      region: {}\n"
        ),
        MESH_WIDE,
    )
    assert diagnostics == [
        "t.yaml:20: Telemetry/unknown: spec.tracing[0].providers[0].name: unknown tracing provider 'zz' "
        "(MeshConfig extensionProviders: jaeger, otel)",
        "t.yaml:28: Telemetry/sampling: spec.tracing[0].randomSamplingPercentage: "
        "input should be less than or equal to 100",
        "t.yaml:37: Telemetry/tag: spec.tracing[0].customTags.region: custom tag has no value source: "
        "set one of literal, environment, header",
    ]
    for labels in ("app=a", "app=b", "app=c", ""):
        tracing = build_telemetry(policy, proxy(labels)).tracing
        assert tracing is not None and tracing.sampling_percent == 10


def test_negative_sampling_and_two_value_sources() -> None:
    _, diagnostics = load(
        MESH,
        telemetry(
            "t",
            """\
  tracing:
  - randomSamplingPercentage: -1
    customTags:
      both: {literal: {value: x}, header: {name: h}}
""",
        ),
    )
    assert [d.split(": ", 3)[2:] for d in diagnostics] == [
        ["spec.tracing[0].randomSamplingPercentage", "input should be greater than or equal to 0"]
    ]
    _, diagnostics = load(
        MESH,
        telemetry(
            "t",
            """\
  tracing:
  - customTags:
      both: {literal: {value: x}, header: {name: h}}
""",
        ),
    )
    assert diagnostics == [
        "t.yaml:20: Telemetry/t: spec.tracing[0].customTags.both: only one of literal, "
        "environment, header may be set (got literal, header)"
    ]


def test_unsupported_fields_and_second_scope_object() -> None:
    _, diagnostics = load(
        MESH,
        telemetry("a", "  metrics: [{providers: [{name: prometheus}]}]\n"),
        telemetry("b", "  tracing: [{randomSamplingPercentage: 5}]\n"),
        telemetry("c", "  tracing: [{randomSamplingPercentage: 6}]\n"),
    )
    assert diagnostics == [
        "t.yaml:18: Telemetry/a: spec.metrics[0]: a metrics entry without overrides (it enables metrics) "
        f"is not supported: {NOT_PRODUCED}",
        "t.yaml:26: Telemetry/c: Telemetry default/b already applies to the whole namespace; ignored",
    ]


NOT_PRODUCED = (
    "Istio's standard metrics (istio_requests_total, ...) come from Istio's stats filter, which upstream "
    "Envoy does not have, so they are never produced here"
)


def test_metrics_disabled_holds_as_written_and_applies() -> None:
    # istio.io disable_metrics: a standard metric that is never produced is disabled as asked.
    policy, diagnostics = load(MESH, telemetry("quiet", """\
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: ALL_METRICS, mode: CLIENT_AND_SERVER}
      disabled: true
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      disabled: true
"""))
    assert [obj.metadata.name for obj in policy if obj.KIND == "Telemetry"] == ["quiet"]
    assert diagnostics == [
        f"Info t.yaml:18: Telemetry/quiet: spec.metrics: {NOT_PRODUCED}; disabling them holds as written and "
        "needs no configuration (Envoy's own statistics stay, as in Istio)"
    ]


def test_metrics_that_need_istio_stats_are_errors_with_the_reason() -> None:
    policy, diagnostics = load(MESH, telemetry("tags", """\
  metrics:
  - providers: [{name: stackdriver}]
    reportingInterval: 5s
    overrides:
    - match: {metric: REQUEST_COUNT}
      tagOverrides: {response_code: {operation: REMOVE}}
    - match: {metric: REQUEST_SIZE}
      disabled: false
"""), telemetry("typo", "  metrics: [{overrides: [{match: {metric: REQUEST_TOTAL}, disabled: true}]}]\n"))
    assert [obj for obj in policy if obj.KIND == "Telemetry"] == []
    assert diagnostics == [
        "t.yaml:19: Telemetry/tags: spec.metrics[0].providers[0].name: unsupported value 'stackdriver': "
        "the only metrics provider is 'prometheus'",
        f"t.yaml:20: Telemetry/tags: spec.metrics[0].reportingInterval: unsupported field: {NOT_PRODUCED}",
        "t.yaml:23: Telemetry/tags: spec.metrics[0].overrides[0].tagOverrides: unsupported field: it "
        f"changes the tags of metrics that exist; {NOT_PRODUCED}",
        "t.yaml:25: Telemetry/tags: spec.metrics[0].overrides[1].disabled: an override other than "
        f"`disabled: true` is not supported: {NOT_PRODUCED}",
        "t.yaml:31: Telemetry/typo: spec.metrics[0].overrides[0].match.metric: unsupported value "
        "'REQUEST_TOTAL'; expected 'ALL_METRICS', 'REQUEST_COUNT', 'REQUEST_DURATION', 'REQUEST_SIZE', "
        "'RESPONSE_SIZE', 'TCP_OPENED_CONNECTIONS', 'TCP_CLOSED_CONNECTIONS', 'TCP_SENT_BYTES', "
        "'TCP_RECEIVED_BYTES', 'GRPC_REQUEST_MESSAGES' or 'GRPC_RESPONSE_MESSAGES'",
    ]


def test_meshconfig_provider_problems() -> None:
    text = MESH.replace("defaultProviders: {tracing: [otel]}", "defaultProviders: {tracing: [nope]}")
    text += "  accessLogFormat: '{not json'\n"
    text += "  rootNamespace: mesh-root\n"
    _, diagnostics = load(
        text.replace(
            "    zipkin: {service: 127.0.0.1, port: 9411}\n",
            "    zipkin: {service: 127.0.0.1, port: 9411}\n    opentelemetry: {service: x, port: 1}\n",
        )
    )
    assert [d.split(": ", 3)[2] for d in diagnostics] == [
        "spec.extensionProviders[1]",
        "spec.defaultProviders.tracing[0]",
        "spec.accessLogFormat",
    ]


# --- merge --------------------------------------------------------------------------------------------


def test_workload_overrides_namespace_overrides_mesh_and_tags_merge() -> None:
    policy, diagnostics = load(
        MESH,
        MESH_WIDE,
        telemetry(
            "ns",
            "  tracing:\n  - randomSamplingPercentage: 50\n    customTags:\n"
            "      region: {environment: {name: BRAIN_REGION, defaultValue: none}}\n",
        ),
        telemetry(
            "web",
            "  selector: {matchLabels: {app: web}}\n  tracing:\n  - providers: [{name: jaeger}]\n"
            "    randomSamplingPercentage: 100\n    customTags:\n"
            "      environment: {literal: {value: prod}}\n",
        ),
    )
    assert diagnostics == []
    web = build_telemetry(policy, proxy("app=web,version=v1")).tracing
    assert web is not None
    assert (web.provider.kind, web.provider.host, web.sampling_percent) == (
        TracerKind.ZIPKIN,
        "127.0.0.1",
        100,
    )
    assert [(t.tag, t.source, t.value, t.default_value) for t in web.custom_tags] == [
        ("correlation", TagSource.HEADER, "x-correlation-id", ""),
        ("environment", TagSource.LITERAL, "prod", ""),
        ("region", TagSource.ENVIRONMENT, "BRAIN_REGION", "none"),
    ]
    assert web.service_name == "web.default"
    other = build_telemetry(policy, proxy("app=api")).tracing
    assert other is not None and (other.provider.kind, other.sampling_percent) == (
        TracerKind.OPENTELEMETRY,
        50,
    )
    elsewhere = build_telemetry(policy, proxy("app=web", namespace="shop")).tracing
    assert elsewhere is not None and elsewhere.sampling_percent == 10  # selectors apply in their namespace


def test_defaults_without_telemetry_and_switches() -> None:
    policy, _ = load(MESH)
    result = build_telemetry(policy, proxy())
    assert result.tracing is not None and result.tracing.sampling_percent == 1.0  # Istio's default
    assert result.access_log is not None and result.access_log.encoding is LogEncoding.JSON
    policy, _ = load(MESH.replace("  accessLogFile: /dev/stdout\n", "  enableTracing: false\n"))
    assert build_telemetry(policy, proxy()) == dataclasses.replace(build_telemetry(policy, proxy()))
    assert build_telemetry(policy, proxy()).tracing is None
    assert build_telemetry(policy, proxy()).access_log is None
    policy, _ = load(
        MESH.replace("  accessLogFile: /dev/stdout\n", "  enableTracing: false\n"),
        telemetry("enabled", "  tracing: [{randomSamplingPercentage: 3}]\n  accessLogging: [{}]\n"),
    )
    on = build_telemetry(policy, proxy())
    assert on.tracing is not None and on.tracing.sampling_percent == 3
    assert on.access_log is not None and on.access_log.path == "/dev/stdout"
    policy, _ = load(
        MESH,
        telemetry(
            "quiet", "  tracing: [{disableSpanReporting: true}]\n  accessLogging: [{disabled: true}]\n"
        ),
    )
    off = build_telemetry(policy, proxy())
    assert (off.tracing, off.access_log) == (None, None)
    # the MeshConfig (providers, access log file) and the Telemetry that switched things off
    assert [(o.kind, o.name, o.line) for o in off.origins] == [
        ("MeshConfig", "mesh", 1),
        ("Telemetry", "quiet", 14),
    ]


def test_no_meshconfig_means_no_tracing_provider() -> None:
    policy, diagnostics = load(
        telemetry("t", "  tracing: [{providers: [{name: otel}]}]\n").removeprefix("---\n")
    )
    assert len(diagnostics) == 1 and "unknown tracing provider 'otel'" in diagnostics[0]
    assert build_telemetry(policy, proxy()).tracing is None


# --- translation --------------------------------------------------------------------------------------


def _envoy(policy: PolicySet, identity: ProxyIdentity) -> dict[str, dict[str, Any]]:
    resources = translate_proxy(build_proxy(policy, identity))
    return {
        kind: {
            name: MessageToDict(m, preserving_proto_field_name=True)
            for name, m in resources.by_type[t].items()
        }
        for kind, t in (("clusters", CLUSTER), ("listeners", LISTENER))
    }


def _manager(listener: dict[str, Any]) -> dict[str, Any]:
    manager: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return manager


def test_every_connection_manager_traces_and_logs() -> None:
    policy, _ = load(MESH, MESH_WIDE)
    identity = dataclasses.replace(
        proxy("app=a"), inbound_address=SocketAddress("127.0.0.1", 15006), app_ports=(9101,)
    )
    envoy = _envoy(policy, identity)
    outbound = envoy["listeners"][names.OUTBOUND_HTTP_LISTENER]
    inbound = envoy["listeners"][names.INBOUND_HTTP_LISTENER]
    assert (outbound["traffic_direction"], inbound["traffic_direction"]) == ("OUTBOUND", "INBOUND")
    for listener in (outbound, inbound):
        manager = _manager(listener)
        tracing = manager["tracing"]
        assert tracing["random_sampling"] == {"value": 10.0}
        assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
        grpc = tracing["provider"]["typed_config"]["grpc_service"]["envoy_grpc"]
        assert grpc == {"cluster_name": "telemetry|4317||otel-collector", "authority": "otel-collector"}
        assert {t["tag"] for t in tracing["custom_tags"]} == {"correlation", "environment"}
        (log,) = manager["access_log"]
        fields = log["typed_config"]["log_format"]["json_format"]
        assert fields["correlation_id"] == "%REQ(X-CORRELATION-ID)%"
        assert fields["request_id"] == "%REQ(X-REQUEST-ID)%"
    collector = envoy["clusters"]["telemetry|4317||otel-collector"]
    assert collector["type"] == "STRICT_DNS"
    assert "http2_protocol_options" in str(collector["typed_extension_protocol_options"])


@pytest.mark.parametrize("role", ["sidecar", "gateway"])
def test_zipkin_collector_cluster_is_static_for_an_ip(role: str) -> None:
    policy, _ = load(MESH, telemetry("z", "  tracing: [{providers: [{name: jaeger}]}]\n", "istio-system"))
    identity = ProxyIdentity(
        role=ProxyIdentity().role if role == "sidecar" else ProxyIdentity().role.GATEWAY,
        namespace="istio-system",
    )
    envoy = _envoy(policy, identity)
    cluster = envoy["clusters"]["telemetry|9411||127.0.0.1"]
    assert cluster["type"] == "STATIC" and "typed_extension_protocol_options" not in cluster


def test_without_telemetry_nothing_changes() -> None:
    policy, _ = load(MESH.replace("  accessLogFile: /dev/stdout\n", "  enableTracing: false\n"))
    envoy = _envoy(policy, proxy())
    manager = _manager(envoy["listeners"][names.OUTBOUND_HTTP_LISTENER])
    assert "tracing" not in manager and "access_log" not in manager
    assert not [name for name in envoy["clusters"] if name.startswith("telemetry|")]
