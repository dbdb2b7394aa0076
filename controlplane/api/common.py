"""Value types several Istio kinds share: durations, percentages, string matches, selectors, port selectors.

Istio writes durations as protobuf Duration strings ("2s", "500ms", "1.5s", "1m", "1h"); we parse them once,
here, into whole milliseconds so later stages never see text. A duration given as a number is rejected, as
Istio's CRD validation does: `timeout: 5` is a common slip and silently reading it as seconds would hide it.

Range checks live here too (`UInt32`, `Int32`, `PositiveInt32`, `MAX_DURATION_MS`): every number a policy
field holds is bounded by the Envoy field it becomes, so what validates can always be translated (an
out-of-range value would otherwise raise only when a proxy's resources are built, long after `validate`
said yes).
"""

from __future__ import annotations

import re
from typing import Annotated

import re2
from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from controlplane.api.meta import IstioModel, PortNumber

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_UNIT_MS = {"h": 3_600_000.0, "m": 60_000.0, "s": 1000.0, "ms": 1.0, "us": 0.001, "µs": 0.001, "ns": 1e-6}


# Envoy keeps durations as int64 nanoseconds (absl::Duration, std::chrono) and google.protobuf.Duration
# allows at most 315,576,000,000 s; the tighter of the two bounds every duration a policy may give.
MAX_DURATION_MS = (2**63 - 1) // 1_000_000
UINT32_MAX = 2**32 - 1
INT32_MAX = 2**31 - 1

# Protobuf integer fields: Envoy's UInt32Value / uint32 and int32 fields.
UInt32 = Annotated[int, Field(ge=0, le=UINT32_MAX)]
PositiveUInt32 = Annotated[int, Field(ge=1, le=UINT32_MAX)]
Int32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
PositiveInt32 = Annotated[int, Field(ge=1, le=INT32_MAX)]


def parse_duration_ms(value: object) -> int:
    """ "1.5s" → 1500. Go/protobuf duration syntax (one or more number+unit parts), non-negative, and at
    most MAX_DURATION_MS."""
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '2s' or '500ms', got {value!r}")
    text = value.strip()
    pos = 0
    total = 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            raise ValueError(f"invalid duration {value!r}: expected e.g. '2s', '500ms', '1m30s'")
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if not text:
        raise ValueError("invalid duration '': expected e.g. '2s'")
    if not total <= MAX_DURATION_MS:  # `not <=` also catches the inf that a 400-digit number becomes
        limit = MAX_DURATION_MS // 1000
        raise ValueError(f"duration {value!r} is too long (at most {limit}s, Envoy's limit)")
    return round(total)


def _positive(value: int) -> int:
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


# Milliseconds. `DurationMs` allows 0 (Istio's "disabled" for timeouts); `PositiveDurationMs` does not.
DurationMs = Annotated[int, BeforeValidator(parse_duration_ms)]
PositiveDurationMs = Annotated[int, BeforeValidator(parse_duration_ms), Field(gt=0)]


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is reported as a diagnostic; RE2's own stderr log is noise


def check_regex(value: str) -> str:
    # Envoy matches with RE2, whose syntax differs from Python's `re` (no lookaround, atomic groups,
    # possessive quantifiers or backreferences): compile with RE2 itself, so that a pattern Envoy would NACK
    # is a diagnostic with file and line instead.
    try:
        re2.compile(value, _RE2_OPTIONS)
    except re2.error as err:
        reason = err.args[0].decode(errors="replace") if err.args and isinstance(err.args[0], bytes) else err
        raise ValueError(f"invalid regular expression {value!r} (RE2): {reason}") from None
    return value


class Percent(IstioModel):
    """Istio's `Percent {value: double}`, 0 to 100."""

    value: Annotated[float, Field(ge=0, le=100)]


class StringMatch(IstioModel):
    """Istio's StringMatch oneof: exactly one of `exact`, `prefix`, `regex` (an empty mapping is allowed
    where Istio allows it — header matches, meaning "present"; callers decide)."""

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> StringMatch:
        set_fields = [name for name in ("exact", "prefix", "regex") if getattr(self, name) is not None]
        if len(set_fields) > 1:
            raise ValueError(f"only one of exact, prefix, regex may be set (got {', '.join(set_fields)})")
        if self.regex is not None:
            check_regex(self.regex)
        return self

    @property
    def is_empty(self) -> bool:
        return self.exact is None and self.prefix is None and self.regex is None


_LOCALITY = re.compile(r"[^/*\s]+(/[^/*\s]+){0,2}")


def _check_locality(value: str) -> str:
    if not _LOCALITY.fullmatch(value):
        raise ValueError(f"invalid locality {value!r}: expected region[/zone[/subzone]]")
    return value


def _check_locality_pattern(value: str) -> str:
    # `*`, `region/*`, `region/zone/*` or a locality.
    parts = value.split("/")
    if value == "*" or (parts[-1] == "*" and len(parts) <= 3 and _LOCALITY.fullmatch("/".join(parts[:-1]))):
        return value
    return _check_locality(value)


# A workload's locality, `region/zone/subzone` (zone and subzone optional), as Istio writes it.
Locality = Annotated[str, AfterValidator(_check_locality)]
LocalityPattern = Annotated[str, AfterValidator(_check_locality_pattern)]


class PortSelector(IstioModel):
    number: PortNumber


class WorkloadSelector(IstioModel):
    """`workloadSelector: {labels: {...}}`; an empty map would select nothing useful, so it is required."""

    labels: dict[str, str] = Field(min_length=1)


def labels_match(selector: dict[str, str] | tuple[tuple[str, str], ...], labels: dict[str, str]) -> bool:
    """Kubernetes equality selector: every selector label is present with the same value."""
    items = selector.items() if isinstance(selector, dict) else selector
    return all(labels.get(key) == value for key, value in items)


__all__ = [
    "MAX_DURATION_MS",
    "DurationMs",
    "Int32",
    "Percent",
    "PortSelector",
    "PositiveDurationMs",
    "PositiveInt32",
    "PositiveUInt32",
    "StringMatch",
    "UInt32",
    "WorkloadSelector",
    "check_regex",
    "labels_match",
    "parse_duration_ms",
]
