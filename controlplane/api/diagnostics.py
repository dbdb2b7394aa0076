"""Diagnostics: what is wrong with the policy, where (file:line), in which object and field.

Every stage that reads policy reports problems as `Diagnostic` values instead of raising, so that one bad
object never stops the rest of the mesh from being configured. The text form is fixed (tools and tests
grep it):

    file:line: Kind/name: field: message

`field` is an Istio-style path in camelCase with indexes, e.g. `spec.http[0].route[0].destination.host`.
Parts that are unknown are left out: a YAML syntax error (no kind, name or field) reads
`file:line: message`, a problem of a whole object `file:line: Kind/name: message`.

Each diagnostic has a severity, as `istioctl analyze` has: an `Error` is an invalid object (or part of one)
that is not applied; a `Warning` is applied anyway, with Istio's runtime behaviour (a route to a missing
subset answers 503); an `Info` says something was ignored on purpose (Kubernetes kinds we have no use
for). Warnings and infos carry Istio's analyzer code where one exists (`IST0101` ReferencedResourceNotFound).
Errors keep the text form above; the others are prefixed with their severity and code:

    Warning [IST0101] file:line: Kind/name: field: message

This module also turns pydantic's validation errors into our wording, so that messages read like Istio's
("unsupported field") rather than like pydantic internals ("Extra inputs are not permitted").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from controlplane.api.suggest import suggest_field

# A path into a YAML document: mapping keys are strings, sequence indexes are ints.
FieldPath = tuple[str | int, ...]

UNKNOWN = "-"

ERROR = "Error"
WARNING = "Warning"
INFO = "Info"
SEVERITIES = (ERROR, WARNING, INFO)

# istioctl analyze's message codes (istio/istio pkg/config/analysis/msg/messages.yaml) we report.
REFERENCED_RESOURCE_NOT_FOUND = "IST0101"

UNSUPPORTED_FIELD = "unsupported field"
REQUIRED_FIELD = "required field is missing"

# pydantic type errors, worded for YAML authors (pydantic's mention Python class names).
_TYPE_MESSAGES = {
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
}

# A path segment that can be written after a dot; anything else (label keys such as
# "app.kubernetes.io/name") is quoted in brackets so the path stays unambiguous.
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem in the policy. Ordered by file, then line, so sorted lists read top to bottom."""

    file: str
    line: int
    kind: str
    name: str
    field: str
    message: str
    severity: str = ERROR
    code: str = ""

    @property
    def is_error(self) -> bool:
        """Whether the object (or the part of it named by `field`) is withheld: only errors are."""
        return self.severity == ERROR

    def __str__(self) -> str:
        # unknown parts are left out rather than shown as "-/-: -:" (a YAML syntax error has none)
        where = "" if self.kind == self.name == UNKNOWN else f"{self.kind}/{self.name}: "
        field = "" if self.field == UNKNOWN else f"{self.field}: "
        text = f"{self.file}:{self.line}: {where}{field}{self.message}"
        if self.severity == ERROR:
            return text
        code = f" [{self.code}]" if self.code else ""
        return f"{self.severity}{code} {text}"

    def as_json(self) -> dict[str, object]:
        """The `validate -o json` form (also what tools and the admin API can use)."""
        return {
            "severity": self.severity,
            "code": self.code or None,
            "file": self.file,
            "line": self.line,
            "kind": self.kind,
            "name": self.name,
            "field": self.field,
            "message": self.message,
        }


def errors(diagnostics: Sequence[Diagnostic]) -> list[Diagnostic]:
    """The diagnostics that withhold something from the served configuration."""
    return [d for d in diagnostics if d.is_error]


def format_path(path: Sequence[str | int]) -> str:
    """`("spec", "http", 0, "route")` → `spec.http[0].route`; the empty path → `-`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("["):
            # pydantic's own markers such as "[key]" (an invalid mapping key) read well as they are.
            out += part
        elif not _PLAIN_SEGMENT.fullmatch(part):
            out += f'["{part}"]'
        else:
            out += f".{part}" if out else part
    return out or UNKNOWN


def pydantic_message(error: Any, model: type[BaseModel] | None = None) -> str:
    """Our wording for one entry of `ValidationError.errors()` (a pydantic `ErrorDetails` dict); with the
    validated `model`, an unknown field also gets the closest known name ("did you mean")."""
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        suggestion = suggest_field(model, error.get("loc", ())) if model is not None else None
        return f"{UNSUPPORTED_FIELD}; did you mean {suggestion!r}?" if suggestion else UNSUPPORTED_FIELD
    if kind == "missing":
        return REQUIRED_FIELD
    if kind in _TYPE_MESSAGES:
        return f"{_TYPE_MESSAGES[kind]}, got {_yaml_type(error.get('input'))}"
    if kind == "literal_error":
        return f"unsupported value {error.get('input')!r}; expected {ctx.get('expected', '?')}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        # Our validators raise ValueError with a finished sentence; pydantic would prefix "Value error, ".
        return str(ctx["error"])
    message = str(error.get("msg", "invalid value"))
    return message[:1].lower() + message[1:]


def _yaml_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return repr(value)


def relevant_errors(errors: Sequence[Any]) -> list[Any]:
    """pydantic's errors minus the noise: a tuple whose item failed also reports "too short" (it counts the
    items that validated), which would blame the user for a length they got right."""
    locs = [tuple(error.get("loc", ())) for error in errors]
    return [
        error
        for error, loc in zip(errors, locs, strict=True)
        if not (
            error.get("type") == "too_short"
            and any(other[: len(loc)] == loc and len(other) > len(loc) for other in locs)
        )
    ]


def pydantic_path(loc: Sequence[str | int]) -> FieldPath:
    """A pydantic error location as a document path (drops markers like "[key]" that are not keys)."""
    return tuple(part for part in loc if not (isinstance(part, str) and part.startswith("[")))
