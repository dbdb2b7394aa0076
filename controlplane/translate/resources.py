"""The translate stage's output: Envoy resources grouped by xDS type URL and keyed by resource name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import attrgetter

from google.protobuf.message import Message

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# ADS push order: a resource's dependencies arrive before it (secrets before their users, clusters and
# their endpoints before the listeners and routes that point at them), so Envoy never routes to a
# cluster it does not have yet.
PUSH_ORDER: tuple[str, ...] = (SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE)

SHORT_NAMES: Mapping[str, str] = {
    CLUSTER: "clusters",
    ENDPOINT: "endpoints",
    LISTENER: "listeners",
    ROUTE: "routes",
    SECRET: "secrets",
}


@dataclass(frozen=True, order=True)
class Origin:
    """A policy object that contributed to a resource (provenance for NACKs and config dumps)."""

    kind: str
    namespace: str
    name: str
    file: str = ""
    line: int = 0

    def __str__(self) -> str:
        where = f" ({self.file}:{self.line})" if self.file else ""
        return f"{self.kind}/{self.namespace}/{self.name}{where}"


# Origin's order as a key: sorting by it compares tuples in C instead of calling the generated __lt__
_ORDER = attrgetter("kind", "namespace", "name", "file", "line")


@dataclass
class Resources:
    """Envoy messages by type URL, then by resource name, and the policy objects each came from."""

    by_type: dict[str, dict[str, Message]] = field(default_factory=lambda: {t: {} for t in PUSH_ORDER})
    origins: dict[tuple[str, str], tuple[Origin, ...]] = field(default_factory=dict)

    def add(self, type_url: str, name: str, message: Message, origins: tuple[Origin, ...] = ()) -> None:
        if name in self.by_type[type_url]:
            raise ValueError(f"duplicate {SHORT_NAMES[type_url]} resource {name!r}")
        self.by_type[type_url][name] = message
        if len(origins) == 1:
            self.origins[(type_url, name)] = tuple(origins)
        elif origins:
            self.origins[(type_url, name)] = tuple(sorted(set(origins), key=_ORDER))

    def origins_of(self, type_url: str, name: str) -> tuple[Origin, ...]:
        return self.origins.get((type_url, name), ())
