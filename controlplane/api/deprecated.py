"""Deprecated field names Istio still accepts: read as their replacement, with a warning naming it.

Runs on a document's raw data before the models see it, so models only know the current names. Each rule
is (the mapping key that holds the field, the deprecated name) → the replacement and how its value is
converted. Istio's own reading is followed, not the name's look:

- `outlierDetection.consecutiveErrors` is read by Istio as gateway errors (502/503/504; see
  pilot/pkg/networking/core/cluster_traffic_policy.go): it becomes `consecutiveGatewayErrors`;
- `http[].mirrorPercent` (an integer percent) becomes `mirrorPercentage: {value: N}`.

A document that sets both the deprecated field and its replacement gets an error: which one wins is not
obvious, and Istio's answer differs per field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from controlplane.api.diagnostics import FieldPath


@dataclass(frozen=True)
class Rule:
    parent: str  # the key of the mapping that holds the field; "" matches any
    name: str
    replacement: str
    convert: Callable[[Any], Any]


def _percentage(value: Any) -> Any:
    return {"value": value} if isinstance(value, int | float) and not isinstance(value, bool) else value


RULES = (
    Rule("outlierDetection", "consecutiveErrors", "consecutiveGatewayErrors", lambda value: value),
    Rule("http", "mirrorPercent", "mirrorPercentage", _percentage),
)


# The names `rewrite` looks for: a document without any of them as a key needs no rewriting.
NAMES = frozenset(rule.name for rule in RULES)


@dataclass(frozen=True)
class Deprecation:
    path: FieldPath  # where the deprecated field is written
    message: str
    is_error: bool = False


def rewrite(data: Any) -> tuple[Any, list[Deprecation]]:
    """`data` with deprecated names replaced (a new structure; the input is not changed), and where."""
    found: list[Deprecation] = []
    return _walk(data, (), "", found), found


def _walk(value: Any, path: FieldPath, parent: str, found: list[Deprecation]) -> Any:
    if isinstance(value, list):
        return [_walk(item, (*path, index), parent, found) for index, item in enumerate(value)]
    if not isinstance(value, dict):
        return value
    out = {key: _walk(item, (*path, key), key if isinstance(key, str) else "", found)
           for key, item in value.items()}
    for rule in _rules(parent):
        if rule.name not in out:
            continue
        where = (*path, rule.name)
        if rule.replacement in out:
            message = (
                f"deprecated {rule.name} and its replacement {rule.replacement} are both set; "
                f"set only {rule.replacement}"
            )
            found.append(Deprecation(where, message, is_error=True))
            continue
        out[rule.replacement] = rule.convert(out.pop(rule.name))
        found.append(Deprecation(where, f"{rule.name} is deprecated; read as {rule.replacement} (use that)"))
    return out


def _rules(parent: str) -> Iterator[Rule]:
    return (rule for rule in RULES if rule.parent in ("", parent))
