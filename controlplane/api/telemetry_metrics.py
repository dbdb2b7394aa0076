"""Telemetry `metrics` (telemetry.istio.io): which parts of Istio's metrics configuration hold here.

Field names follow istio/api telemetry/v1alpha1/telemetry.proto (`Metrics`, `MetricsOverrides`,
`MetricSelector`, `TagOverride`). Istio's standard metrics (`istio_requests_total`, ...) are produced by
Istio's stats filter, which upstream Envoy does not have, so no proxy here ever produces them; Envoy's own
statistics are always served and no Istio Telemetry changes them (in Istio either).

What follows from that, per override:
- `disabled: true` says "this standard metric is not produced": that holds as written, so the object is
  accepted with an Info saying why nothing is configured;
- `tagOverrides`, `disabled: false`, an entry without overrides (they select or reshape metrics that must
  exist), `reportingInterval` and providers other than `prometheus` are Errors with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from controlplane.api.diagnostics import INFO, FieldPath
from controlplane.api.meta import IstioModel, Problem

# Istio's metrics provider is `prometheus` (the MeshConfig default); others need MeshConfig providers.
PROMETHEUS_PROVIDER = "prometheus"

IstioMetric = Literal[
    "ALL_METRICS", "REQUEST_COUNT", "REQUEST_DURATION", "REQUEST_SIZE", "RESPONSE_SIZE",
    "TCP_OPENED_CONNECTIONS", "TCP_CLOSED_CONNECTIONS", "TCP_SENT_BYTES", "TCP_RECEIVED_BYTES",
    "GRPC_REQUEST_MESSAGES", "GRPC_RESPONSE_MESSAGES",
]

_NOT_PRODUCED = (
    "Istio's standard metrics (istio_requests_total, ...) come from Istio's stats filter, which upstream "
    "Envoy does not have, so they are never produced here"
)


class MetricsProviderRef(IstioModel):
    name: str = Field(min_length=1)


class MetricSelector(IstioModel):
    metric: IstioMetric | None = None
    custom_metric: str | None = None
    mode: Literal["CLIENT_AND_SERVER", "CLIENT", "SERVER"] = "CLIENT_AND_SERVER"


class TagOverride(IstioModel):
    operation: Literal["UPSERT", "REMOVE"] = "UPSERT"
    value: str = ""


class MetricsOverride(IstioModel):
    match: MetricSelector | None = None
    disabled: bool | None = None
    tag_overrides: dict[str, TagOverride] = Field(default_factory=dict)


class Metrics(IstioModel):
    providers: tuple[MetricsProviderRef, ...] = ()
    overrides: tuple[MetricsOverride, ...] = ()
    reporting_interval: str | None = None


def check_metrics(entries: tuple[Metrics, ...]) -> Iterator[Problem]:
    """Problems of a Telemetry's `metrics` (paths under the object); one Info when all of it holds."""
    errors = list(_errors(entries))
    yield from errors
    if entries and not errors:
        yield Problem(
            ("spec", "metrics"),
            f"{_NOT_PRODUCED}; disabling them holds as written and needs no configuration (Envoy's own "
            "statistics stay, as in Istio)",
            severity=INFO,
        )


def _errors(entries: tuple[Metrics, ...]) -> Iterator[Problem]:
    for index, entry in enumerate(entries):
        base: FieldPath = ("spec", "metrics", index)
        for number, provider in enumerate(entry.providers):
            if provider.name != PROMETHEUS_PROVIDER:
                yield Problem((*base, "providers", number, "name"),
                              f"unsupported value {provider.name!r}: the only metrics provider is "
                              f"{PROMETHEUS_PROVIDER!r}")
        if entry.reporting_interval is not None:
            yield Problem((*base, "reportingInterval"), f"unsupported field: {_NOT_PRODUCED}")
        if not entry.overrides:
            yield Problem(
                base, f"a metrics entry without overrides (it enables metrics) is not supported: "
                f"{_NOT_PRODUCED}"
            )
        for number, override in enumerate(entry.overrides):
            path: FieldPath = (*base, "overrides", number)
            if override.match is not None and override.match.metric and override.match.custom_metric:
                yield Problem((*path, "match"), "only one of metric, customMetric may be set")
            if override.tag_overrides:
                message = "unsupported field: it changes the tags of metrics that exist; " + _NOT_PRODUCED
                yield Problem((*path, "tagOverrides"), message)
            elif override.disabled is not True:
                yield Problem((*path, "disabled"),
                              f"an override other than `disabled: true` is not supported: {_NOT_PRODUCED}")
