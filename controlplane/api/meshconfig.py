"""MeshConfig: mesh-wide defaults, in our own envelope because Istio keeps MeshConfig in a ConfigMap.

    apiVersion: controlplane.io/v1alpha1
    kind: MeshConfig
    metadata: {name: mesh}
    spec:
      outboundTrafficPolicy: {mode: REGISTRY_ONLY}   # or ALLOW_ANY (Istio's default)
      connectTimeout: 5s                             # Istio's default 10s
      rootNamespace: istio-system                    # where mesh-wide Telemetry lives (Istio's default)
      enableTracing: true
      accessLogFile: /dev/stdout                     # the built-in `envoy` access log provider
      accessLogEncoding: JSON                        # or TEXT
      extensionProviders:
      - name: otel
        opentelemetry: {service: otel-collector, port: 4317}
      - name: jaeger
        zipkin: {service: jaeger, port: 9411}
      defaultProviders: {tracing: [otel]}

`spec` uses Istio's MeshConfig field names (istio/api mesh/v1alpha1/config.proto); only the fields above
(and `trustDomain`, `accessLogFormat`, providers' `maxTagLength`) are supported. One MeshConfig per mesh:
when several are given the first by namespace/name applies and the others are reported (api/validate.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from controlplane.api.common import PositiveDurationMs, PositiveUInt32
from controlplane.api.meta import Host, IstioModel, PolicyObject, PortNumber, Problem

OutboundMode = Literal["ALLOW_ANY", "REGISTRY_ONLY"]
AccessLogEncoding = Literal["TEXT", "JSON"]

# Istio's built-in access log provider: Envoy's file logger writing to `accessLogFile`.
ENVOY_ACCESS_LOG_PROVIDER = "envoy"
DEFAULT_ROOT_NAMESPACE = "istio-system"


class OutboundTrafficPolicy(IstioModel):
    mode: OutboundMode = "ALLOW_ANY"


class TracingCollector(IstioModel):
    """Where a tracing provider sends spans: `service` is a DNS name or an IP (no registry lookup: the
    collector need not be a ServiceEntry), `port` its port. `maxTagLength` caps tag values (Istio: 256)."""

    service: Host
    port: PortNumber
    max_tag_length: PositiveUInt32 | None = None  # Envoy's max_path_tag_length


class ExtensionProvider(IstioModel):
    """Istio's ExtensionProvider oneof; `opentelemetry` (OTLP/gRPC) and `zipkin` (HTTP JSON v2) only."""

    name: Annotated[str, Field(min_length=1)]
    opentelemetry: TracingCollector | None = None
    zipkin: TracingCollector | None = None

    @property
    def collector(self) -> TracingCollector | None:
        return self.opentelemetry or self.zipkin


class DefaultProviders(IstioModel):
    tracing: tuple[str, ...] = ()
    access_logging: tuple[str, ...] = ()


class MeshConfigSpec(IstioModel):
    outbound_traffic_policy: OutboundTrafficPolicy = OutboundTrafficPolicy()
    connect_timeout: PositiveDurationMs | None = None
    root_namespace: Annotated[str, Field(min_length=1)] = DEFAULT_ROOT_NAMESPACE
    # Accepted for Istio compatibility; nothing uses it until mTLS (SPIFFE ids) lands.
    trust_domain: str = "cluster.local"
    enable_tracing: bool = True
    access_log_file: str = ""
    access_log_encoding: AccessLogEncoding = "TEXT"
    access_log_format: str = ""
    extension_providers: tuple[ExtensionProvider, ...] = ()
    default_providers: DefaultProviders = DefaultProviders()

    def tracing_providers(self) -> dict[str, ExtensionProvider]:
        return {p.name: p for p in self.extension_providers if p.collector is not None}

    def access_log_providers(self) -> list[str]:
        return [ENVOY_ACCESS_LOG_PROVIDER]


class MeshConfig(PolicyObject):
    KIND: ClassVar[str] = "MeshConfig"

    api_version: Literal["controlplane.io/v1alpha1"]  # type: ignore[assignment]
    kind: Literal["MeshConfig"]
    spec: MeshConfigSpec = MeshConfigSpec()

    def check(self) -> Iterator[Problem]:
        spec = self.spec
        seen: set[str] = set()
        for index, provider in enumerate(spec.extension_providers):
            path = ("spec", "extensionProviders", index)
            if provider.name in seen or provider.name == ENVOY_ACCESS_LOG_PROVIDER:
                yield Problem((*path, "name"), f"duplicate provider name {provider.name!r}")
            seen.add(provider.name)
            kinds = [k for k in ("opentelemetry", "zipkin") if getattr(provider, k) is not None]
            if len(kinds) != 1:
                yield Problem(path, "set exactly one of opentelemetry, zipkin")
        tracing = spec.tracing_providers()
        for index, name in enumerate(spec.default_providers.tracing):
            if name not in tracing:
                known = ", ".join(sorted(tracing)) or "none defined"
                yield Problem(
                    ("spec", "defaultProviders", "tracing", index),
                    f"unknown tracing provider {name!r} (extensionProviders: {known})",
                )
        for index, name in enumerate(spec.default_providers.access_logging):
            if name not in spec.access_log_providers():
                yield Problem(
                    ("spec", "defaultProviders", "accessLogging", index),
                    f"unknown access log provider {name!r} (known: {ENVOY_ACCESS_LOG_PROVIDER})",
                )
        if spec.access_log_format and spec.access_log_encoding == "JSON":
            yield from _check_json_format(spec.access_log_format)


def _check_json_format(text: str) -> Iterator[Problem]:
    """With JSON encoding Istio reads `accessLogFormat` as a JSON object of key → Envoy format string."""
    try:
        value = json.loads(text)
    except ValueError as err:
        yield Problem(("spec", "accessLogFormat"), f"invalid JSON for accessLogEncoding JSON: {err}")
        return
    if not isinstance(value, dict) or not value or not all(isinstance(v, str) for v in value.values()):
        yield Problem(
            ("spec", "accessLogFormat"),
            "with accessLogEncoding JSON, expected a JSON object of key: format string",
        )
