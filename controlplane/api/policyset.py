"""PolicySet: the valid policy objects, indexed by kind/namespace/name, with where each came from.

It is the validate stage's output and the build stage's only input. Immutable once made: stages that
"change" it (cross-object validation dropping a route) make a new one. Iteration is always sorted by
(kind, namespace, name), so everything built from a PolicySet is deterministic whatever order the files
were read in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

from controlplane.api.credentials import Credential
from controlplane.api.destinationrule import DestinationRule
from controlplane.api.documents import Source
from controlplane.api.meshconfig import MeshConfig
from controlplane.api.meta import ObjectKey, PolicyObject
from controlplane.api.serviceentry import ServiceEntry
from controlplane.api.virtualservice import VirtualService
from controlplane.api.workloadentry import WorkloadEntry, WorkloadGroup

T = TypeVar("T", bound=PolicyObject)


class PolicySet:
    """Valid policy objects by `ObjectKey`, plus each object's `Source` (file and field lines) if known."""

    # __weakref__: api/validate.py keeps each validated set's Validation weakly, keyed by the set
    __slots__ = ("__weakref__", "_by_type", "_credentials", "_objects", "_sources")

    def __init__(
        self,
        objects: Iterable[PolicyObject] = (),
        *,
        sources: Mapping[ObjectKey, Source] | None = None,
        credentials: Mapping[str, Credential] | None = None,
    ) -> None:
        found: dict[ObjectKey, PolicyObject] = {}
        for obj in objects:
            key = obj.key  # a property that makes a new key: asked once
            if key in found:
                raise ValueError(f"duplicate policy object {key}")
            found[key] = obj
        # sorted by the key's fields, which is ObjectKey's order (its generated __lt__ is several times
        # slower: this sort was a fifth of a reload)
        ordered = sorted(found.items(), key=lambda item: (item[0].kind, item[0].namespace, item[0].name))
        self._objects: dict[ObjectKey, PolicyObject] = dict(ordered)
        self._by_type: dict[type, list[PolicyObject]] | None = None
        known = (sources or {}).get
        self._sources: dict[ObjectKey, Source] = {
            key: source for key in self._objects if (source := known(key)) is not None
        }
        # Certificate files named by Gateway `credentialName` (read by the loader, see api/credentials.py).
        self._credentials: dict[str, Credential] = dict(sorted((credentials or {}).items()))

    # -- lookup ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[PolicyObject]:
        return iter(self._objects.values())

    def __contains__(self, key: object) -> bool:
        return key in self._objects

    def __getitem__(self, key: ObjectKey) -> PolicyObject:
        return self._objects[key]

    def __repr__(self) -> str:
        return f"PolicySet({len(self)} objects)"

    def get(self, kind: str, namespace: str, name: str) -> PolicyObject | None:
        return self._objects.get(ObjectKey(kind, namespace, name))

    def keys(self) -> list[ObjectKey]:
        return list(self._objects)

    def source(self, key: ObjectKey) -> Source | None:
        """Where the object came from; None for objects made in code (tests, future API sources)."""
        return self._sources.get(key)

    @property
    def sources(self) -> Mapping[ObjectKey, Source]:
        return self._sources

    @property
    def credentials(self) -> Mapping[str, Credential]:
        return self._credentials

    # -- typed iteration ---------------------------------------------------------------------------

    def of_kind(self, cls: type[T]) -> list[T]:
        """All objects of one kind, sorted by (namespace, name). Indexed once per set: the build stage
        asks per cluster, and a scan each time made builds quadratic in the number of services."""
        by_type = self._by_type
        if by_type is None:
            by_type = {}
            for obj in self._objects.values():
                by_type.setdefault(type(obj), []).append(obj)
            self._by_type = by_type
        if cls in by_type or not any(issubclass(kind, cls) for kind in by_type):
            return list(by_type.get(cls, []))  # type: ignore[arg-type]
        return [obj for obj in self._objects.values() if isinstance(obj, cls)]

    def in_namespace(self, namespace: str) -> list[PolicyObject]:
        return [obj for obj in self._objects.values() if obj.metadata.namespace == namespace]

    def service_entries(self) -> list[ServiceEntry]:
        return self.of_kind(ServiceEntry)

    def virtual_services(self) -> list[VirtualService]:
        return self.of_kind(VirtualService)

    def destination_rules(self) -> list[DestinationRule]:
        return self.of_kind(DestinationRule)

    def workload_entries(self) -> list[WorkloadEntry]:
        return self.of_kind(WorkloadEntry)

    def workload_groups(self) -> list[WorkloadGroup]:
        return self.of_kind(WorkloadGroup)

    def mesh_config(self) -> MeshConfig | None:
        """The mesh's MeshConfig: the first by namespace/name (validation reports any others)."""
        configs = self.of_kind(MeshConfig)
        return configs[0] if configs else None

    def kinds(self) -> list[str]:
        return sorted({key.kind for key in self._objects})

    # -- derivation --------------------------------------------------------------------------------

    def patched(self, changes: Mapping[ObjectKey, tuple[PolicyObject, Source | None] | None]) -> PolicySet:
        """A new set with some objects of this one replaced (same key) or removed (None), the others and
        the order kept: a copy of the indexes instead of sorting them again (one edit of a large mesh)."""
        patched = PolicySet.__new__(PolicySet)
        objects, sources = dict(self._objects), dict(self._sources)
        for key, change in changes.items():
            if key not in objects:
                raise KeyError(key)  # a new key would need its sorted place
            if change is None:
                del objects[key]
                sources.pop(key, None)
                continue
            obj, source = change
            if (source is None) != (key not in sources):
                raise KeyError(key)  # a source added would not be in the sorted order either
            objects[key] = obj
            if source is not None:
                sources[key] = source
        patched._objects, patched._sources, patched._credentials = objects, sources, self._credentials
        patched._by_type = None
        return patched

    def replace(self, objects: Iterable[PolicyObject]) -> PolicySet:
        """A new set with `objects` (same sources for keys that survive). Validation keeps most objects as
        they are and replaces a few by pruned copies under the same key: those keys stay in this set's
        sorted order, which is kept instead of making every key again and sorting them (a tenth of a
        5,000-service startup)."""
        keys = {id(obj): key for key, obj in self._objects.items()}  # alive here: ids are not reused
        found: dict[ObjectKey, PolicyObject] = {}
        for obj in objects:
            key = keys.get(id(obj)) or obj.key
            if key in found:
                raise ValueError(f"duplicate policy object {key}")
            found[key] = obj
        if not found.keys() <= self._objects.keys():
            return PolicySet(found.values(), sources=self._sources, credentials=self._credentials)
        replaced = PolicySet.__new__(PolicySet)
        replaced._objects = {key: found[key] for key in self._objects if key in found}
        known = self._sources
        replaced._sources = {key: known[key] for key in replaced._objects if key in known}
        replaced._credentials = self._credentials
        replaced._by_type = None
        return replaced
