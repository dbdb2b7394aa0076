"""The translate stage's output: Envoy resources grouped by xDS type URL and keyed by resource name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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


@dataclass
class Resources:
    """Envoy messages by type URL, then by resource name."""

    by_type: dict[str, dict[str, Message]] = field(default_factory=lambda: {t: {} for t in PUSH_ORDER})

    def add(self, type_url: str, name: str, message: Message) -> None:
        if name in self.by_type[type_url]:
            raise ValueError(f"duplicate {SHORT_NAMES[type_url]} resource {name!r}")
        self.by_type[type_url][name] = message
