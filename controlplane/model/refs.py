"""References the model uses between its parts and back to policy: service ports, clusters, origins."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter

from controlplane.api.meta import PolicyObject
from controlplane.api.policyset import PolicySet


@dataclass(frozen=True, order=True)
class HostPort:
    """A service port as the mesh knows it: a ServiceEntry host (as written) and one of its port numbers."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, order=True)
class ClusterRef:
    """A set of upstream endpoints: a service port, optionally narrowed to a subset (DestinationRule)."""

    service: HostPort
    subset: str = ""


@dataclass(frozen=True, order=True)
class PolicyRef:
    """A policy object that contributed to part of the model (provenance; translation turns it into
    `translate.resources.Origin`)."""

    kind: str
    namespace: str
    name: str
    file: str = ""
    line: int = 0


def policy_ref(policy: PolicySet, obj: PolicyObject) -> PolicyRef:
    """The provenance of one policy object (file and line when it was loaded from a file)."""
    source = policy.source(obj.key)
    file, line = (source.file, source.line) if source else ("", 0)
    return PolicyRef(obj.kind, obj.metadata.namespace, obj.metadata.name, file, line)


# PolicyRef's order as a key: sorting by it compares tuples in C instead of calling the generated __lt__
_ORDER = attrgetter("kind", "namespace", "name", "file", "line")


def sorted_refs(refs: Iterable[PolicyRef]) -> tuple[PolicyRef, ...]:
    """Distinct refs in PolicyRef order (a model part's `origins`), built for thousands per shape."""
    unique = set(refs)
    if len(unique) == 1:
        return tuple(unique)
    return tuple(sorted(unique, key=_ORDER))
