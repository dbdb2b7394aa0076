"""Telemetry (telemetry.istio.io): tracing and access logging per mesh, namespace or workload.

    apiVersion: telemetry.istio.io/v1
    kind: Telemetry
    metadata: {name: mesh-default, namespace: istio-system}   # the root namespace: mesh-wide
    spec:
      selector: {matchLabels: {app: web}}                      # optional: only these workloads
      tracing:
      - providers: [{name: otel}]                              # MeshConfig extensionProviders
        randomSamplingPercentage: 10
        customTags:
          environment: {literal: {value: dev}}
          correlation: {header: {name: x-correlation-id, defaultValue: none}}
          brain_region: {environment: {name: BRAIN_REGION}}
      accessLogging:
      - providers: [{name: envoy}]                             # built-in: MeshConfig accessLogFile
        disabled: false

Field names follow istio/api telemetry/v1alpha1/telemetry.proto. Supported: `selector`, `tracing` (one
entry, without `match`), `accessLogging` (one entry, without `match`; `filter.expression` is CEL, evaluated
by Envoy), `metrics` overrides that disable Istio's standard metrics (api/telemetry_metrics.py says why
only those). `targetRef(s)` and everything else are unsupported fields. Which objects apply to a
proxy and how they merge is the build stage's business (model/telemetry.py); this module checks each
object, and `check_telemetries` checks what needs the MeshConfig (provider names) and reports conflicting
objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from controlplane.api.diagnostics import FieldPath
from controlplane.api.meshconfig import ENVOY_ACCESS_LOG_PROVIDER, MeshConfig
from controlplane.api.meta import IstioModel, PolicyObject, Problem
from controlplane.api.telemetry_metrics import Metrics, check_metrics

TelemetryApiVersion = Literal["telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"]
_TAG_SOURCES = "literal, environment, header"


class ProviderRef(IstioModel):
    name: Annotated[str, Field(min_length=1)]


class LiteralTag(IstioModel):
    value: str


class EnvironmentTag(IstioModel):
    name: Annotated[str, Field(min_length=1)]
    default_value: str = ""


class HeaderTag(IstioModel):
    name: Annotated[str, Field(min_length=1)]
    default_value: str = ""


class CustomTag(IstioModel):
    """Istio's CustomTag oneof: exactly one of literal, environment, header (checked in `Telemetry.check`,
    so that the problem points at the tag)."""

    literal: LiteralTag | None = None
    environment: EnvironmentTag | None = None
    header: HeaderTag | None = None

    def sources(self) -> list[str]:
        return [name for name in ("literal", "environment", "header") if getattr(self, name) is not None]


class Tracing(IstioModel):
    providers: tuple[ProviderRef, ...] = ()
    # None: inherited from the enclosing scope (Istio's DoubleValue wrapper).
    random_sampling_percentage: Annotated[float, Field(ge=0, le=100)] | None = None
    disable_span_reporting: bool | None = None
    custom_tags: dict[str, CustomTag] = Field(default_factory=dict)


class AccessLogFilter(IstioModel):
    # A CEL expression over Envoy's attributes (`response.code >= 500`), evaluated by Envoy's CEL access
    # log filter as Istio does; Envoy reports (NACKs) an expression it cannot compile.
    expression: str = Field(min_length=1)


class AccessLogging(IstioModel):
    providers: tuple[ProviderRef, ...] = ()
    disabled: bool | None = None
    filter: AccessLogFilter | None = None


class TelemetrySelector(IstioModel):
    """Istio's WorkloadSelector for Telemetry (`matchLabels`; an empty map would select every workload of
    the namespace, which is what leaving `selector` out says, so it is required)."""

    match_labels: dict[str, str] = Field(min_length=1)


class TelemetrySpec(IstioModel):
    selector: TelemetrySelector | None = None
    tracing: tuple[Tracing, ...] = ()
    access_logging: tuple[AccessLogging, ...] = ()
    # Only what holds without Istio's stats filter is accepted (api/telemetry_metrics.py).
    metrics: tuple[Metrics, ...] = ()


class Telemetry(PolicyObject):
    KIND: ClassVar[str] = "Telemetry"

    api_version: TelemetryApiVersion  # type: ignore[assignment]
    kind: Literal["Telemetry"]
    spec: TelemetrySpec = TelemetrySpec()

    @property
    def tracing(self) -> Tracing | None:
        return self.spec.tracing[0] if self.spec.tracing else None

    @property
    def access_logging(self) -> AccessLogging | None:
        return self.spec.access_logging[0] if self.spec.access_logging else None

    def check(self) -> Iterator[Problem]:
        yield from check_metrics(self.spec.metrics)
        # Istio allows several entries told apart by `match` (client / server mode); we have no `match`,
        # so a second entry could only contradict the first.
        if len(self.spec.tracing) > 1:
            yield Problem(("spec", "tracing", 1), "only one tracing entry is supported")
        if len(self.spec.access_logging) > 1:
            yield Problem(("spec", "accessLogging", 1), "only one accessLogging entry is supported")
        for index, tracing in enumerate(self.spec.tracing):
            for tag, value in sorted(tracing.custom_tags.items()):
                path: FieldPath = ("spec", "tracing", index, "customTags", tag)
                sources = value.sources()
                if not sources:
                    yield Problem(path, f"custom tag has no value source: set one of {_TAG_SOURCES}")
                elif len(sources) > 1:
                    yield Problem(path, f"only one of {_TAG_SOURCES} may be set (got {', '.join(sources)})")


def check_telemetries(
    telemetries: list[Telemetry], mesh: MeshConfig | None
) -> tuple[list[Telemetry], list[tuple[Telemetry, FieldPath, str]]]:
    """Telemetry objects that can apply, and problems (object, field path, message) with the others.

    An object naming a provider the MeshConfig does not define is dropped (every other object keeps
    working). Of several objects for the same scope (namespace-wide, or the same selector) only the first
    by name applies, as Istio applies the oldest; the others are reported and dropped.
    """
    tracing_providers = set(mesh.spec.tracing_providers()) if mesh else set()
    log_providers = set(mesh.spec.access_log_providers()) if mesh else {ENVOY_ACCESS_LOG_PROVIDER}
    kept: list[Telemetry] = []
    problems: list[tuple[Telemetry, FieldPath, str]] = []
    scopes: dict[tuple[str, tuple[tuple[str, str], ...]], Telemetry] = {}
    for telemetry in telemetries:
        found = list(_provider_problems(telemetry, tracing_providers, log_providers))
        problems.extend((telemetry, path, message) for path, message in found)
        if found:
            continue
        selector = telemetry.spec.selector
        labels = tuple(sorted(selector.match_labels.items())) if selector else ()
        scope = (telemetry.metadata.namespace, labels)
        first = scopes.setdefault(scope, telemetry)
        if first is not telemetry:
            what = "the same selector" if selector else "the whole namespace"
            message = f"Telemetry {first.ref} already applies to {what}; ignored"
            problems.append((telemetry, ("spec", "selector") if selector else (), message))
            continue
        kept.append(telemetry)
    return kept, problems


def _provider_problems(
    telemetry: Telemetry, tracing_providers: set[str], log_providers: set[str]
) -> Iterator[tuple[FieldPath, str]]:
    for index, tracing in enumerate(telemetry.spec.tracing):
        for number, ref in enumerate(tracing.providers):
            if ref.name not in tracing_providers:
                known = ", ".join(sorted(tracing_providers)) or "none defined"
                message = f"unknown tracing provider {ref.name!r} (MeshConfig extensionProviders: {known})"
                yield ("spec", "tracing", index, "providers", number, "name"), message
    for index, logging in enumerate(telemetry.spec.access_logging):
        for number, ref in enumerate(logging.providers):
            if ref.name not in log_providers:
                known = ", ".join(sorted(log_providers))
                message = f"unknown access log provider {ref.name!r} (known: {known})"
                yield ("spec", "accessLogging", index, "providers", number, "name"), message
