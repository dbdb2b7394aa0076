"""Who a connected proxy is: the identity the build stage needs, read from Envoy's node metadata.

A proxy names itself in its bootstrap (`controlplane bootstrap` writes it). Its node id is free-form;
everything the policy depends on travels in `node.metadata`, under the keys below, so that two proxies
with equal metadata get the same configuration (and share one snapshot):

    role             "sidecar" (default) or "gateway"
    namespace        Istio namespace of the workload (default "default")
    service_account  the workload's service account (default "default"): its identity is
                     spiffe://<trustDomain>/ns/<namespace>/sa/<service_account>; the xDS server checks it
                     against the proxy's token (xds/auth.py)
    labels           map of workload labels (used by selectors: Gateway, Telemetry, WorkloadEntry)
    outbound_address "HOST:PORT" the sidecar's outbound HTTP listener binds (its apps' HTTP proxy)
    inbound_address  "HOST:PORT" the sidecar's inbound HTTP listener binds (absent: no inbound listener)
    app_ports        the local app's ports, "9101" or "9101,9102" (or a list of numbers); the inbound
                     listener forwards to them (first port by default, see model/inbound.py)
    health_address   gateways: "HOST:PORT" of the readiness listener (GET /healthz/ready; Istio uses
                     0.0.0.0:15021); pushed over xDS, so it answers only once config arrived. Absent:
                     no readiness listener (two gateways on one host would fight over a default)
    gateway_bind     gateways: the address Gateway servers without `bind` listen on (default 0.0.0.0, as
                     Istio); the local mesh sets 127.0.0.1 so a developer's ingress stays on loopback
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import StrEnum

META_ROLE = "role"
META_NAMESPACE = "namespace"
META_SERVICE_ACCOUNT = "service_account"
META_LABELS = "labels"
META_OUTBOUND_ADDRESS = "outbound_address"
META_INBOUND_ADDRESS = "inbound_address"
META_APP_PORTS = "app_ports"
META_HEALTH_ADDRESS = "health_address"
META_GATEWAY_BIND = "gateway_bind"
DEFAULT_GATEWAY_BIND = "0.0.0.0"

DEFAULT_NAMESPACE = "default"
DEFAULT_SERVICE_ACCOUNT = "default"
DEFAULT_OUTBOUND_ADDRESS = "127.0.0.1:15001"


class Role(StrEnum):
    SIDECAR = "sidecar"
    GATEWAY = "gateway"


@dataclass(frozen=True)
class SocketAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> SocketAddress:
        """Parse "host:port" (IPv6 as "[::1]:port"); raises ValueError with a readable message."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        return cls(host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_ports(value: object) -> tuple[int, ...]:
    """`app_ports` metadata: "9101,9102", a single number, or a list of numbers; raises ValueError."""
    items: list[object]
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        items = [value]
    ports: list[int] = []
    for item in items:
        text = str(int(item)) if isinstance(item, float) and item.is_integer() else str(item)
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise ValueError(f"expected port numbers such as '9101,9102', got {value!r}")
        if int(text) not in ports:
            ports.append(int(text))
    return tuple(ports)


@dataclass(frozen=True)
class ProxyIdentity:
    """Everything about a proxy that its configuration may depend on. Hashable: it is the snapshot key."""

    role: Role = Role.SIDECAR
    namespace: str = DEFAULT_NAMESPACE
    labels: tuple[tuple[str, str], ...] = ()
    outbound_address: SocketAddress = field(
        default_factory=lambda: SocketAddress.parse(DEFAULT_OUTBOUND_ADDRESS)
    )

    inbound_address: SocketAddress | None = None
    app_ports: tuple[int, ...] = ()
    # Gateways only; None: no readiness listener.
    health_address: SocketAddress | None = None
    gateway_bind: str = DEFAULT_GATEWAY_BIND
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    # Envoy's node.locality as `region/zone/subzone` ("" unknown): locality load balancing.
    locality: str = ""

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def describe(self) -> str:
        """One line naming the shape (status tables, the console, logs); computed once per identity."""
        return self._description

    @functools.cached_property
    def _description(self) -> str:  # frozen: cached_property writes the instance dict, not a field
        labels = ",".join(f"{k}={v}" for k, v in self.labels)
        if self.role is Role.GATEWAY:
            # a gateway has no outbound listener: show what does shape its config instead
            health = f" health {self.health_address}" if self.health_address else ""
            return f"{self.role}/{self.namespace}[{labels}] bind {self.gateway_bind}{health}"
        inbound = f" inbound {self.inbound_address}->{self.app_ports}" if self.inbound_address else ""
        account = f" sa={self.service_account}" if self.service_account != DEFAULT_SERVICE_ACCOUNT else ""
        return f"{self.role}/{self.namespace}[{labels}]@{self.outbound_address}{inbound}{account}"
