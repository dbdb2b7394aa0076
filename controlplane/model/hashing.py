"""A hash computed once, for the big frozen model values that are hashed again and again.

Model parts are memo keys by value (xds/assembly.py takes a part over across policy generations when its
model value is equal), and the model stage carries unchanged clusters, routes and virtual hosts across
generations as the same objects (model/carry.py). A dataclass's generated `__hash__` walks every field
on every call, so hashing the tuple of 1,000 clusters walked all their endpoints and policies each time;
with `__hash__ = cached_hash` in the class body an object hashes its fields once and keeps the result
(the dataclass is frozen, so the fields cannot change under it). `Hashed` does the same for a value used
as a key: a tuple (of model parts, of policy object instances) rehashes every element on every lookup.
"""

from __future__ import annotations

import dataclasses
from typing import Any

_COMPARED: dict[type, tuple[str, ...]] = {}


def cached_hash(self: Any) -> int:
    """`__hash__` for a frozen dataclass: the hash of the fields `__eq__` compares, computed once."""
    found: int | None = self.__dict__.get("_hash")
    if found is None:
        names = _COMPARED.get(type(self))
        if names is None:
            names = _COMPARED[type(self)] = tuple(f.name for f in dataclasses.fields(self) if f.compare)
        found = hash(tuple(getattr(self, name) for name in names))
        object.__setattr__(self, "_hash", found)
    return found


class Hashed:
    """A hashable value as a dict key, hashed once; equal to another `Hashed` of an equal value."""

    __slots__ = ("_hash", "value")

    def __init__(self, value: object) -> None:
        self.value = value
        self._hash = hash(value)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Hashed) and self._hash == other._hash
                                 and self.value == other.value)
