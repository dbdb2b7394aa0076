"""Telemetry for one proxy: which tracer, sampling and tags, and which access log — Istio's merge resolved.

Which Telemetry objects apply (istio pilot/pkg/model/telemetry.go), from weakest to strongest:

1. MeshConfig defaults: `defaultProviders.tracing` with Istio's 1% sampling when `enableTracing` is on;
   `defaultProviders.accessLogging`, or the built-in `envoy` provider when `accessLogFile` is set;
2. the Telemetry without selector in the root namespace (`rootNamespace`, istio-system): mesh-wide;
3. the Telemetry without selector in the proxy's namespace;
4. the first Telemetry (by name) in the proxy's namespace whose `selector.matchLabels` the proxy's labels
   include.

A later level replaces what it sets: providers (when it lists any), `randomSamplingPercentage`,
`disableSpanReporting`, access logging's `disabled`; custom tags merge by tag name. Tracing uses the first
provider (as Istio does). The result is plain values (no Envoy types), compared by value like the rest of
the model, so proxies with equal telemetry still share a snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from controlplane.api.common import labels_match
from controlplane.api.meshconfig import DEFAULT_ROOT_NAMESPACE, ENVOY_ACCESS_LOG_PROVIDER, MeshConfigSpec
from controlplane.api.policyset import PolicySet
from controlplane.api.telemetry import CustomTag as ApiCustomTag
from controlplane.api.telemetry import Telemetry
from controlplane.model.identity import ProxyIdentity
from controlplane.model.refs import PolicyRef, policy_ref

# Istio's sampling when nothing sets it (pilot falls back to 1.0%; meshConfig.defaultConfig.tracing.sampling).
DEFAULT_SAMPLING_PERCENT = 1.0
DEFAULT_ACCESS_LOG_PATH = "/dev/stdout"


class TracerKind(StrEnum):
    OPENTELEMETRY = "opentelemetry"
    ZIPKIN = "zipkin"


class TagSource(StrEnum):
    LITERAL = "literal"
    HEADER = "header"
    ENVIRONMENT = "environment"


class LogEncoding(StrEnum):
    TEXT = "TEXT"
    JSON = "JSON"


@dataclass(frozen=True, order=True)
class CustomTag:
    """A span tag: `value` is the literal, or the request header / environment variable to read."""

    tag: str
    source: TagSource
    value: str
    default_value: str = ""


@dataclass(frozen=True)
class TracingProvider:
    name: str
    kind: TracerKind
    host: str
    port: int
    max_tag_length: int | None = None


@dataclass(frozen=True)
class TracingConfig:
    provider: TracingProvider
    sampling_percent: float
    custom_tags: tuple[CustomTag, ...] = ()
    # How the proxy names itself in spans (OpenTelemetry `service.name`): Istio's `<app>.<namespace>`.
    service_name: str = ""


@dataclass(frozen=True)
class AccessLogConfig:
    path: str = DEFAULT_ACCESS_LOG_PATH
    encoding: LogEncoding = LogEncoding.TEXT
    # MeshConfig accessLogFormat as written; empty: Istio's default format for the encoding.
    format: str = ""
    # Telemetry accessLogging[].filter.expression (CEL): only matching requests are logged.
    filter_expression: str | None = None


@dataclass(frozen=True)
class ProxyTelemetry:
    """What every HTTP connection manager of the proxy reports; None parts are off."""

    tracing: TracingConfig | None = None
    access_log: AccessLogConfig | None = None
    origins: tuple[PolicyRef, ...] = ()


def build_telemetry(policy: PolicySet, proxy: ProxyIdentity) -> ProxyTelemetry:
    mesh_config = policy.mesh_config()
    mesh = mesh_config.spec if mesh_config is not None else MeshConfigSpec()
    chain = applicable_telemetries(policy, proxy, mesh.root_namespace)
    # MeshConfig supplies the providers and the access log file/encoding
    contributors = [*chain, *([mesh_config] if mesh_config is not None else [])]
    origins = tuple(sorted(policy_ref(policy, obj) for obj in contributors))
    return ProxyTelemetry(_tracing(mesh, chain, proxy), _access_log(mesh, chain), origins)


def applicable_telemetries(
    policy: PolicySet, proxy: ProxyIdentity, root_namespace: str = DEFAULT_ROOT_NAMESPACE
) -> list[Telemetry]:
    """The Telemetry objects that apply to `proxy`, weakest first (see the module docstring)."""
    telemetries = policy.of_kind(Telemetry)
    chain: list[Telemetry] = []
    for namespace in dict.fromkeys((root_namespace, proxy.namespace)):
        chain.extend(t for t in telemetries if t.metadata.namespace == namespace and t.spec.selector is None)
    labels = proxy.label_map
    for telemetry in telemetries:
        selector = telemetry.spec.selector
        in_namespace = telemetry.metadata.namespace == proxy.namespace
        if in_namespace and selector is not None and labels_match(selector.match_labels, labels):
            chain.append(telemetry)
            break
    return chain


def _tracing(mesh: MeshConfigSpec, chain: list[Telemetry], proxy: ProxyIdentity) -> TracingConfig | None:
    providers = mesh.default_providers.tracing
    sampling = DEFAULT_SAMPLING_PERCENT
    tags: dict[str, ApiCustomTag] = {}
    configured = False
    span_reporting_disabled: bool | None = None
    for telemetry in chain:
        tracing = telemetry.tracing
        if tracing is None:
            continue
        configured = True
        if tracing.disable_span_reporting is not None:
            span_reporting_disabled = tracing.disable_span_reporting
        if tracing.providers:
            providers = tuple(ref.name for ref in tracing.providers)
        if tracing.random_sampling_percentage is not None:
            sampling = tracing.random_sampling_percentage
        tags.update(tracing.custom_tags)
    # A Telemetry that configures tracing turns it on even with enableTracing off (Istio: the Telemetry
    # API takes precedence over the legacy MeshConfig switch); disableSpanReporting turns it off.
    disabled = (
        span_reporting_disabled
        if span_reporting_disabled is not None
        else (not mesh.enable_tracing and not configured)
    )
    known = mesh.tracing_providers()
    names = [name for name in providers if name in known]
    if disabled or not names:
        return None
    provider = known[names[0]]
    collector = provider.collector
    assert collector is not None  # tracing_providers() keeps only providers with a collector
    kind = TracerKind.OPENTELEMETRY if provider.opentelemetry is not None else TracerKind.ZIPKIN
    return TracingConfig(
        provider=TracingProvider(
            provider.name, kind, collector.service, collector.port, collector.max_tag_length
        ),
        sampling_percent=sampling,
        custom_tags=tuple(sorted(_custom_tag(name, tag) for name, tag in tags.items())),
        service_name=f"{proxy.label_map.get('app', proxy.role.value)}.{proxy.namespace}",
    )


def _custom_tag(name: str, tag: ApiCustomTag) -> CustomTag:
    if tag.literal is not None:
        return CustomTag(name, TagSource.LITERAL, tag.literal.value)
    if tag.header is not None:
        return CustomTag(name, TagSource.HEADER, tag.header.name, tag.header.default_value)
    assert tag.environment is not None  # Telemetry.check() rejects tags without a source
    return CustomTag(name, TagSource.ENVIRONMENT, tag.environment.name, tag.environment.default_value)


def _access_log(mesh: MeshConfigSpec, chain: list[Telemetry]) -> AccessLogConfig | None:
    providers = mesh.default_providers.access_logging
    if not providers and mesh.access_log_file:
        providers = (ENVOY_ACCESS_LOG_PROVIDER,)
    disabled = False
    configured = False
    expression: str | None = None
    for telemetry in chain:
        logging = telemetry.access_logging
        if logging is None:
            continue
        configured = True
        if logging.filter is not None:
            expression = logging.filter.expression  # the most specific Telemetry's filter wins
        if logging.providers:
            providers = tuple(ref.name for ref in logging.providers)
        if logging.disabled is not None:
            disabled = logging.disabled
    # `accessLogging: [{}]` with no provider anywhere still asks for logs: the built-in one.
    if configured and not providers:
        providers = (ENVOY_ACCESS_LOG_PROVIDER,)
    if disabled or ENVOY_ACCESS_LOG_PROVIDER not in providers:
        return None
    return AccessLogConfig(
        path=mesh.access_log_file or DEFAULT_ACCESS_LOG_PATH,
        encoding=LogEncoding(mesh.access_log_encoding),
        format=mesh.access_log_format,
        filter_expression=expression,
    )
