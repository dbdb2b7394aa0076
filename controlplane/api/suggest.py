""""Did you mean": the closest known field name for a misspelled one.

pydantic reports an unknown key as `extra_forbidden` at its location; we walk the model classes along that
location to the model that owns the key and compare the key with that model's field names (as written in
YAML, camelCase). Only that model's fields are candidates: suggesting a field from elsewhere in the schema
would send the user to the wrong place.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

# How similar a name must be to be suggested (difflib ratio): catches `timout`, `retires`, `Hosts`.
_CUTOFF = 0.75


def suggest_field(model: type[BaseModel], loc: Sequence[str | int]) -> str | None:
    """The closest field name to `loc[-1]` in the model at `loc[:-1]` (None when nothing is close)."""
    if not loc or not isinstance(loc[-1], str):
        return None
    names: set[str] = set()
    for owner in _models_at(model, loc[:-1]):
        names.update(_yaml_names(owner))
    wrong = loc[-1]
    by_lower = {name.lower(): name for name in names}
    if wrong.lower() in by_lower:
        return by_lower[wrong.lower()]
    close = difflib.get_close_matches(wrong, sorted(names), n=1, cutoff=_CUTOFF)
    return close[0] if close else None


def _yaml_names(model: type[BaseModel]) -> Iterator[str]:
    for name, info in model.model_fields.items():
        yield info.alias or name


def _models_at(model: type[BaseModel], loc: Sequence[str | int]) -> Iterator[type[BaseModel]]:
    if not loc:
        yield model
        return
    head, rest = loc[0], loc[1:]
    if not isinstance(head, str):
        return
    for name, info in model.model_fields.items():
        if head in (name, info.alias):
            yield from _follow(info.annotation, rest)
            return


def _follow(annotation: Any, loc: Sequence[str | int]) -> Iterator[type[BaseModel]]:
    """Models reachable from a field's type along `loc` (sequence indexes and mapping keys are skipped)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _models_at(annotation, loc)
        return
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        yield from _follow(args[0], loc)
    elif origin in (Union, types.UnionType):
        for arg in args:
            yield from _follow(arg, loc)
    elif origin in (tuple, list) and loc and isinstance(loc[0], int):
        yield from _follow(args[0], loc[1:])
    elif origin is dict and loc:
        yield from _follow(args[1], loc[1:])
