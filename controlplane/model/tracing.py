"""Tracing what a computation reads of a proxy identity, so its result can be shared by every proxy that
has the same values there (model/policywide.py's memos, model/carry.py's lent routes).

`traced(proxy, reads)` is a copy of the identity that records into `reads` which fields and which label
keys were read (`labels.get("app")` reads one key; iterating the labels reads all of them); `signature`
gives another proxy's values at those reads. A build stage is deterministic, so a proxy with the same
signature takes the same path and gets the same result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from controlplane.model.identity import ProxyIdentity

_FIELDS = frozenset(f.name for f in dataclasses.fields(ProxyIdentity))


class Ref:
    """An object as a memo key by identity (registries are dicts, unhashable by value; identity is what
    sharing means here). Holds the object, so its id is not reused while the key lives."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ref) and other.obj is self.obj


class Reads:
    """What a computation read of a proxy identity: fields, label keys, or all labels."""

    def __init__(self) -> None:
        self.fields: set[str] = set()
        self.labels: set[str] = set()
        self.all_labels = False

    def spec(self) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
        everything = self.all_labels or "labels" in self.fields
        return tuple(sorted(self.fields - {"labels"})), None if everything else tuple(sorted(self.labels))


Spec = tuple[tuple[str, ...], tuple[str, ...] | None]


def signature(spec: Spec, proxy: ProxyIdentity) -> tuple[object, ...]:
    fields, label_keys = spec
    values: list[object] = [getattr(proxy, name) for name in fields]
    if label_keys is None:
        values.append(proxy.labels)
    else:
        labels = dict(proxy.labels)
        values.extend(labels.get(key) for key in label_keys)
    return tuple(values)


class _RecordingLabels(dict[str, str]):
    """A proxy's labels that record which keys are read; any whole-map access records all of them."""

    def __init__(self, labels: dict[str, str], reads: Reads) -> None:
        super().__init__(labels)
        self._reads = reads

    def get(self, key: str, default: Any = None) -> Any:
        self._reads.labels.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self._reads.labels.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._reads.labels.add(str(key))
        return super().__contains__(key)

    def _all(self) -> None:
        self._reads.all_labels = True

    def __iter__(self) -> Iterator[str]:
        self._all()
        return super().__iter__()

    def __len__(self) -> int:
        self._all()
        return super().__len__()

    def keys(self) -> Any:
        self._all()
        return super().keys()

    def items(self) -> Any:
        self._all()
        return super().items()

    def values(self) -> Any:
        self._all()
        return super().values()

    def __eq__(self, other: object) -> bool:
        self._all()
        return super().__eq__(other)

    def __ne__(self, other: object) -> bool:
        self._all()
        return super().__ne__(other)

    __hash__ = None

    def copy(self) -> dict[str, str]:
        self._all()
        return dict(super().items())

    def __repr__(self) -> str:
        self._all()
        return super().__repr__()

    def __or__(self, other: Any) -> Any:
        self._all()
        return dict(super().items()) | other


class _Traced(ProxyIdentity):
    """A copy of a proxy identity that records what is read of it (see the module docstring)."""

    def __getattribute__(self, name: str) -> Any:
        if name in _FIELDS:
            object.__getattribute__(self, "_reads").fields.add(name)
        return object.__getattribute__(self, name)

    @property
    def label_map(self) -> dict[str, str]:
        reads: Reads = object.__getattribute__(self, "_reads")
        return _RecordingLabels(dict(object.__getattribute__(self, "labels")), reads)


def traced(proxy: ProxyIdentity, reads: Reads) -> ProxyIdentity:
    copy = _Traced(**{name: getattr(proxy, name) for name in _FIELDS})
    object.__setattr__(copy, "_reads", reads)
    return copy


def detached(proxy: ProxyIdentity, reads: Reads) -> ProxyIdentity:
    """`traced`, copying `proxy` without reading it through its own tracing (when it is traced itself):
    what the copy reads is recorded in `reads` only, and `replay` passes it on if need be."""
    copy = _Traced(**{name: object.__getattribute__(proxy, name) for name in _FIELDS})
    object.__setattr__(copy, "_reads", reads)
    return copy


def replay(reads: Reads, proxy: ProxyIdentity) -> None:
    """Read of `proxy` what `reads` recorded (so a traced `proxy` records it too)."""
    for name in reads.fields:
        getattr(proxy, name)
    labels = proxy.label_map
    if reads.all_labels:
        list(labels.items())
    for key in reads.labels:
        labels.get(key)
