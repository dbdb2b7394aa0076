"""Snapshots: the Envoy resources one proxy shape gets, with content-hash versions and cached wire bytes.

A resource's version is a hash of its deterministic serialization, so equal config has equal versions
across restarts and replicas and different config never reuses a version (see xds-pitfalls.md). Its
serialized `Any` bytes are computed once per version and shared by every snapshot and stream through the
`Interner`.
"""

from __future__ import annotations

import functools
import hashlib
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf.message import Message

from controlplane.translate.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    SECRET,
    Origin,
    Resources,
)
from controlplane.xds import wire
from controlplane.xds.layers import Layer, Layered, Merged

_HCM_TYPE = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name


def content_hash(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:16]


@dataclass(frozen=True, eq=False, slots=True, weakref_slot=True)
class Resource:
    """One named resource at one version, with the bytes every stream sends for it."""

    type_url: str
    name: str
    version: str
    message: Message
    any_payload: bytes
    sotw_field: bytes = field(repr=False)
    delta_field: bytes = field(repr=False)


class Interner:
    """Shares Resource objects (and so their bytes) between snapshots that contain the same version."""

    def __init__(self) -> None:
        self._live: weakref.WeakValueDictionary[tuple[str, str, str], Resource] = (
            weakref.WeakValueDictionary()
        )

    def resource(self, type_url: str, name: str, message: Message) -> Resource:
        value = message.SerializeToString(deterministic=True)
        version = content_hash(type_url.encode(), name.encode(), value)
        key = (type_url, name, version)
        found = self._live.get(key)
        if found is not None:
            return found
        payload = wire.any_bytes(type_url, value)
        made = Resource(
            type_url=type_url,
            name=name,
            version=version,
            message=message,
            any_payload=payload,
            sotw_field=wire.sotw_resource_field(payload),
            delta_field=wire.delta_resource_field(name, version, payload),
        )
        self._live[key] = made
        return made

    def __len__(self) -> int:
        return len(self._live)


def type_version(resources: Iterable[Resource]) -> str:
    """SotW version_info of a set of resources: a hash of their sorted names and versions."""
    parts = sorted(f"{r.name}\x00{r.version}" for r in resources)
    return content_hash(*(p.encode() for p in parts)) if parts else "empty"


MAX_CACHED_BODIES = 4096


@dataclass(frozen=True)
class SotwBody:
    """What a SotW response carries for one selection of resources."""

    resources: Mapping[str, Resource]
    version: str
    joined: bytes  # the spliced `resources` fields, sorted by name (without a layer's)
    sorted_names: tuple[str, ...]
    # a wildcard over an assembled snapshot: the payload is this layer's pre-joined bytes around the own
    # resources, made per response rather than kept per shape (a megabyte per distinct sidecar)
    layer: Layer | None = None

    @classmethod
    def of(cls, resources: Mapping[str, Resource]) -> SotwBody:
        ordered = sorted(resources.values(), key=lambda r: r.name)
        return cls(dict(resources), type_version(ordered), b"".join(r.sotw_field for r in ordered),
                   tuple(r.name for r in ordered))

    @classmethod
    def layered(cls, resources: Layered) -> SotwBody:
        return cls(resources, resources.type_version(), b"", (), resources.shared)

    @property
    def payload(self) -> bytes:
        if self.layer is None:
            return self.joined
        assert isinstance(self.resources, Layered)
        return self.layer.sotw_payload(self.resources.own)

    @property
    def names(self) -> tuple[str, ...]:
        if self.layer is None:
            return self.sorted_names
        assert isinstance(self.resources, Layered)
        return tuple(sorted((*self.layer.names, *self.resources.own)))


@dataclass(frozen=True)
class Snapshot:
    """Immutable resources of one proxy shape, by type URL then name."""

    resources: Mapping[str, Mapping[str, Resource]]
    version: str
    # cluster name -> name of the ClusterLoadAssignment it reads over EDS
    eds_names: Mapping[str, str]
    # listener name -> names of the RouteConfigurations it reads over RDS
    rds_names: Mapping[str, frozenset[str]]
    # (type URL, name) -> the policy objects that produced the resource
    origins: Mapping[tuple[str, str], tuple[Origin, ...]] = field(default_factory=dict)
    # time.monotonic() of the policy change this snapshot answers (convergence metrics); 0 if unknown
    changed_at: float = 0.0
    # SotW response bodies by (type, selection), shared by every stream of the shape (see sotw_body)
    _sotw_bodies: dict[tuple[str, object], SotwBody] = field(
        default_factory=dict, compare=False, repr=False
    )
    _names: dict[frozenset[str], frozenset[str]] = field(default_factory=dict, compare=False, repr=False)
    _type_versions: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    # the translated parts an assembled snapshot is made of (xds/assembly.py): held here so that the next
    # policy generation can take over those of live shapes whose model did not change, and only theirs
    parts: tuple[object, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def build(cls, resources: Resources, interner: Interner, changed_at: float = 0.0) -> Snapshot:
        by_type: dict[str, dict[str, Resource]] = {}
        for type_url in PUSH_ORDER:
            messages = resources.by_type.get(type_url, {})
            by_type[type_url] = {
                name: interner.resource(type_url, name, messages[name]) for name in sorted(messages)
            }
        versions = {t: type_version(by_type[t].values()) for t in PUSH_ORDER}
        version = content_hash(*(f"{t}={versions[t]}".encode() for t in PUSH_ORDER))
        eds = {
            name: eds_name(res.message) for name, res in by_type[CLUSTER].items()
            if eds_name(res.message) is not None
        }
        rds = {name: rds_names(res.message) for name, res in by_type[LISTENER].items()}
        built = cls(by_type, version, eds, rds,  # type: ignore[arg-type]
                    dict(resources.origins), changed_at)
        built._type_versions.update(versions)
        return built

    @classmethod
    def empty(cls) -> Snapshot:
        return cls.build(Resources(), Interner())

    def of_type(self, type_url: str) -> Mapping[str, Resource]:
        return self.resources.get(type_url, {})

    def shared_names(self, names: frozenset[str]) -> frozenset[str]:
        """One instance of each distinct subscription set, shared by the streams of this snapshot."""
        shared = self._names.setdefault(names, names)
        if len(self._names) > MAX_CACHED_BODIES:
            self._names.clear()
        return shared

    def sotw_body(self, type_url: str, names: frozenset[str] | None) -> SotwBody:
        """The resources, version and spliced bytes of a SotW response for a wildcard (`names` None) or
        named subscription. Computed once per snapshot and selection: a thousand streams of one shape
        would otherwise each sort, hash and join the same resources."""
        key = (type_url, names)
        body = self._sotw_bodies.get(key)
        if body is None:
            current = self.of_type(type_url)
            if names is None and isinstance(current, Layered) and current.shared is not None:
                body = SotwBody.layered(current)
            elif names is None:
                body = SotwBody.of(current)
            else:
                body = SotwBody.of({name: current[name] for name in sorted(names) if name in current})
            if len(self._sotw_bodies) >= MAX_CACHED_BODIES:
                self._sotw_bodies.clear()  # many distinct EDS name sets: keep memory bounded
            self._sotw_bodies[key] = body
        return body

    def type_version_of(self, type_url: str) -> str:
        """type_version of one type's resources, computed once per snapshot (an assembled snapshot's
        `Layered` keeps its own): /debug/syncz asks for every shape's, and hashing a thousand resources
        per type and shape again on each request held the event loop for a second at 500 shapes."""
        resources = self.of_type(type_url)
        if isinstance(resources, Layered):
            return resources.type_version()
        found = self._type_versions.get(type_url)
        if found is None:
            found = self._type_versions[type_url] = type_version(resources.values())
        return found

    def required_types(self) -> frozenset[str]:
        """The types an Envoy that took this snapshot in subscribes to: clusters and listeners (its
        bootstrap asks for both), endpoints if a cluster reads EDS, routes if a listener reads RDS,
        secrets if a TLS context reads SDS. Envoy asks for the last three only once it has processed what
        refers to them, so a proxy that ACKed its clusters alone has not taken its snapshot in yet."""
        return self._required_types

    @functools.cached_property
    def _required_types(self) -> frozenset[str]:  # frozen: cached_property writes the instance dict
        required = {t for t in (CLUSTER, LISTENER) if self.of_type(t)}
        if self.eds_names:
            required.add(ENDPOINT)
        if any(self.rds_names.values()):
            required.add(ROUTE)
        if self.of_type(SECRET) and any(any_reads_sds(self.of_type(t)) for t in (CLUSTER, LISTENER)):
            required.add(SECRET)
        return frozenset(required)

    def origins_of(self, type_url: str, name: str) -> tuple[Origin, ...]:
        return self.origins.get((type_url, name), ())

    def blame(self, type_url: str, error: str) -> list[Origin]:
        """The policy objects behind the resources an Envoy error message names (all of the type's if it
        names none), so a NACK can point at file and line."""
        names = [name for name in self.of_type(type_url) if name and name in error]
        if not names:
            names = list(self.of_type(type_url))
        return sorted({origin for name in names for origin in self.origins_of(type_url, name)})

    def consistency_errors(self) -> list[str]:
        """Dangling references that would leave Envoy warming: every EDS name has a
        ClusterLoadAssignment and every RDS name a RouteConfiguration (go-control-plane's consistent())."""
        # an assembled snapshot's shared part was checked once, for every shape (xds/assembly.py)
        eds_refs = self.eds_names.own if isinstance(self.eds_names, Merged) and self.eds_names.verified \
            else self.eds_names
        rds_refs = self.rds_names.own if isinstance(self.rds_names, Merged) and self.rds_names.verified \
            else self.rds_names
        errors = [
            f"cluster {cluster!r} reads endpoints {eds!r}, which the snapshot does not have"
            for cluster, eds in sorted(eds_refs.items())
            if eds not in self.of_type(ENDPOINT)
        ]
        errors += [
            f"listener {listener!r} reads routes {route!r}, which the snapshot does not have"
            for listener, routes in sorted(rds_refs.items())
            for route in sorted(routes)
            if route not in self.of_type(ROUTE)
        ]
        return errors


def eds_name(message: Message) -> str | None:
    assert isinstance(message, cluster_pb2.Cluster)
    if message.type != cluster_pb2.Cluster.EDS:
        return None
    return message.eds_cluster_config.service_name or message.name


# Layer → whether one of its resources reads SDS: a layer is shared by hundreds of shapes, so each
# new shape checks only its own resources (/debug/syncz asks for every shape's required types)
_LAYER_READS_SDS: weakref.WeakKeyDictionary[Layer, bool] = weakref.WeakKeyDictionary()


def any_reads_sds(resources: Mapping[str, Resource]) -> bool:
    if not isinstance(resources, Layered):
        return any(reads_sds(r.message) for r in resources.values())
    layer = resources.shared
    if layer is not None:
        found = _LAYER_READS_SDS.get(layer)
        if found is None:
            found = _LAYER_READS_SDS[layer] = any(reads_sds(r.message) for r in layer.resources.values())
        if found:
            return True
    return any(reads_sds(r.message) for r in resources.own.values())


def reads_sds(message: Message) -> bool:
    """Whether a Cluster's or Listener's TLS context reads a certificate or trust bundle over SDS."""
    if isinstance(message, cluster_pb2.Cluster):
        sockets = [message.transport_socket, *(m.transport_socket for m in message.transport_socket_matches)]
        context: Message = tls_pb2.UpstreamTlsContext()
    else:
        assert isinstance(message, listener_pb2.Listener)
        chains = [*message.filter_chains]
        if message.HasField("default_filter_chain"):
            chains.append(message.default_filter_chain)
        sockets = [chain.transport_socket for chain in chains]
        context = tls_pb2.DownstreamTlsContext()
    for socket in sockets:
        if not socket.typed_config.type_url.endswith(context.DESCRIPTOR.full_name):
            continue
        socket.typed_config.Unpack(context)
        common = context.common_tls_context
        validation = "validation_context_sds_secret_config"
        if (common.tls_certificate_sds_secret_configs or common.HasField(validation)
                or common.combined_validation_context.HasField(validation)):
            return True
    return False


def rds_names(message: Message) -> frozenset[str]:
    assert isinstance(message, listener_pb2.Listener)
    chains = [*message.filter_chains]
    if message.HasField("default_filter_chain"):
        chains.append(message.default_filter_chain)
    names = set()
    for chain in chains:
        for network_filter in chain.filters:
            if network_filter.typed_config.type_url != _HCM_TYPE:
                continue
            hcm = hcm_pb2.HttpConnectionManager()
            network_filter.typed_config.Unpack(hcm)
            if hcm.HasField("rds"):
                names.add(hcm.rds.route_config_name)
    return frozenset(names)
