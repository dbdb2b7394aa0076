"""The per-proxy model: what one proxy should do, with Istio's semantics resolved and no Envoy types.

The build stage produces it from the PolicySet; the translate stage turns it into Envoy protos. Everything
here is a frozen dataclass of plain values, so models compare by value (two proxies that would get the same
configuration get equal models) and can be hashed and cached.

What is decided here and not in translation: which services and ports a proxy sees, where each request
goes (route order, default routes, destination ports), which authorities a virtual host answers, and
mesh-wide defaults (timeouts, load balancing). Naming resources is translation's job (`translate/names.py`),
so the model refers to services by `HostPort` / `ClusterRef`, never by Envoy resource names.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from controlplane.build.proxy import Role, SocketAddress

# MeshConfig defaults (istio pkg/config/mesh/mesh.go): connectTimeout 10s, dnsRefreshRate 60s.
DEFAULT_CONNECT_TIMEOUT_MS = 10_000
DEFAULT_DNS_REFRESH_RATE_MS = 60_000


class Discovery(StrEnum):
    """How the proxy finds a cluster's endpoints."""

    # Endpoints pushed by the control plane (ServiceEntry resolution STATIC).
    EDS = "EDS"
    # The proxy resolves hostnames itself and uses every address (ServiceEntry resolution DNS).
    STRICT_DNS = "STRICT_DNS"


class LbPolicy(StrEnum):
    # Istio's default when a DestinationRule sets no load balancer.
    LEAST_REQUEST = "LEAST_REQUEST"
    ROUND_ROBIN = "ROUND_ROBIN"
    RANDOM = "RANDOM"


class UpstreamProtocol(StrEnum):
    HTTP1 = "HTTP1"
    # Ports declared HTTP2 or GRPC: the proxy must speak HTTP/2 to the endpoints.
    HTTP2 = "HTTP2"


@dataclass(frozen=True, order=True)
class HostPort:
    """A service port as the mesh knows it: a ServiceEntry host and one of its port numbers."""

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
class Endpoint:
    address: str
    port: int
    # None: the proxy's default weight (1).
    weight: int | None = None
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Cluster:
    ref: ClusterRef
    discovery: Discovery
    endpoints: tuple[Endpoint, ...]
    protocol: UpstreamProtocol = UpstreamProtocol.HTTP1
    lb_policy: LbPolicy = LbPolicy.LEAST_REQUEST
    connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS
    # Only meaningful for STRICT_DNS; the proxy re-resolves at the record's TTL when it is shorter.
    dns_refresh_rate_ms: int = DEFAULT_DNS_REFRESH_RATE_MS
    respect_dns_ttl: bool = True


@dataclass(frozen=True)
class PathMatch:
    """A request path condition. Only prefixes for now; exact and regex come with the wider API."""

    prefix: str = "/"

    @property
    def matches_everything(self) -> bool:
        return self.prefix in ("", "/")


@dataclass(frozen=True)
class Route:
    """One Envoy route: a VirtualService `http[]` entry crossed with one of its `match[]` conditions.

    `http_name` / `match_name` are Istio's names as written (translation derives the route name from them);
    `is_default` marks the route a service gets when no VirtualService routes it.
    """

    match: PathMatch
    destination: ClusterRef
    http_name: str | None = None
    match_name: str | None = None
    is_default: bool = False


@dataclass(frozen=True)
class VirtualHost:
    """Routing for requests addressed to one service port.

    `authorities` are the `:authority` (Host header) values that select it, unique across the proxy.
    """

    service: HostPort
    authorities: tuple[str, ...]
    routes: tuple[Route, ...]


@dataclass(frozen=True)
class OutboundHttp:
    """The sidecar's outbound HTTP proxy: where it listens and how it routes by authority."""

    address: SocketAddress
    virtual_hosts: tuple[VirtualHost, ...]


@dataclass(frozen=True)
class ProxyModel:
    """Everything one proxy should be configured with. Sorted tuples throughout (deterministic output).

    It holds no proxy identity beyond what the configuration depends on, so proxies that need the same
    configuration get equal models (and can share one snapshot).
    """

    role: Role = Role.SIDECAR
    clusters: tuple[Cluster, ...] = ()
    # None for proxies without an outbound HTTP listener (gateways).
    outbound_http: OutboundHttp | None = None
