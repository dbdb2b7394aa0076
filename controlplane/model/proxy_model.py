"""The per-proxy model: what one proxy should do, with Istio's semantics resolved and no Envoy types.

The build stage produces it from the PolicySet; the translate stage turns it into Envoy protos. Everything
here is a frozen dataclass of plain values, so models compare by value (two proxies that would get the same
configuration get equal models) and can be hashed and cached.

What is decided here and not in translation: which services and ports a proxy sees, where each request
goes (route order, default routes, destination ports, subsets), which authorities a virtual host answers,
the merged DestinationRule policy of every cluster, and mesh-wide defaults. Naming resources is
translation's job (`translate/names.py`), so the model refers to services by `HostPort` / `ClusterRef`.

Parts: `refs` (HostPort, ClusterRef, PolicyRef), `policy` (cluster policy), `routemodel` (HTTP routes);
the names are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from controlplane.model.authz import Authz
from controlplane.model.cluster_policy import (
    DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_DNS_REFRESH_RATE_MS,
    ClusterPolicy,
    HealthCheck,
    LbPolicy,
)
from controlplane.model.gatewaymodel import GatewayConfig, TlsCredential
from controlplane.model.hashing import cached_hash
from controlplane.model.identity import Role, SocketAddress
from controlplane.model.peerauth import MtlsMode
from controlplane.model.refs import ClusterRef, HostPort, PolicyRef
from controlplane.model.routemodel import MatchKind, Route, RouteMatch, StringMatch, WeightedCluster
from controlplane.model.telemetry import ProxyTelemetry
from controlplane.model.tlsmodel import UpstreamTls

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_MS",
    "DEFAULT_DNS_REFRESH_RATE_MS",
    "Cluster",
    "ClusterPolicy",
    "ClusterRef",
    "Discovery",
    "Endpoint",
    "GatewayConfig",
    "HostPort",
    "Inbound",
    "LbPolicy",
    "MatchKind",
    "OutboundHttp",
    "OutboundPolicy",
    "PolicyRef",
    "ProxyModel",
    "ProxyTelemetry",
    "Route",
    "RouteMatch",
    "StringMatch",
    "TcpChain",
    "TcpListener",
    "UpstreamProtocol",
    "VirtualHost",
]


class Discovery(StrEnum):
    """How the proxy finds a cluster's endpoints."""

    # Endpoints pushed by the control plane (ServiceEntry resolution STATIC).
    EDS = "EDS"
    # The proxy resolves hostnames itself and uses every address (ServiceEntry resolution DNS).
    STRICT_DNS = "STRICT_DNS"
    # The proxy resolves each request's authority (ServiceEntry resolution NONE on an HTTP port: the
    # destination the app asked for, as Istio's ORIGINAL_DST would be with traffic capture).
    DYNAMIC_FORWARD_PROXY = "DYNAMIC_FORWARD_PROXY"


class UpstreamProtocol(StrEnum):
    HTTP1 = "HTTP1"
    # Ports declared HTTP2 or GRPC: the proxy must speak HTTP/2 to the endpoints.
    HTTP2 = "HTTP2"
    # TCP ports: no HTTP protocol options at all.
    TCP = "TCP"


class OutboundPolicy(StrEnum):
    """MeshConfig outboundTrafficPolicy.mode: what the sidecar does with a host no ServiceEntry declares."""

    ALLOW_ANY = "ALLOW_ANY"
    REGISTRY_ONLY = "REGISTRY_ONLY"


@dataclass(frozen=True, order=True)
class Endpoint:
    address: str
    port: int
    # None: the proxy's default weight (1).
    weight: int | None = None
    labels: tuple[tuple[str, str], ...] = ()
    # Where active health checks go when not to `port` (a WorkloadGroup probe on another port).
    health_check_port: int | None = None
    # The endpoint runs a sidecar that accepts mTLS: auto mTLS calls it with ISTIO_MUTUAL (model/mtls.py).
    tls_mode: bool = False
    # `region/zone/subzone` ("" unknown), and what locality load balancing made of it (model/locality.py):
    # the Envoy priority, and the locality's weight under `distribute` (None: not weighted).
    locality: str = ""
    priority: int = 0
    locality_weight: int | None = None


@dataclass(frozen=True)
class Cluster:
    ref: ClusterRef
    discovery: Discovery
    endpoints: tuple[Endpoint, ...]
    protocol: UpstreamProtocol = UpstreamProtocol.HTTP1
    policy: ClusterPolicy = field(default_factory=ClusterPolicy)
    connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS
    # Only meaningful for STRICT_DNS; the proxy re-resolves at the record's TTL when it is shorter.
    dns_refresh_rate_ms: int = DEFAULT_DNS_REFRESH_RATE_MS
    respect_dns_ttl: bool = True
    health_check: HealthCheck | None = None
    origins: tuple[PolicyRef, ...] = ()
    # None: plaintext (model/mtls.py)
    tls: UpstreamTls | None = None
    # Endpoints carry locality weights (DestinationRule `distribute`): Envoy's locality-weighted LB.
    locality_weighted: bool = False

    __hash__ = cached_hash  # hashed as part of memo keys, often

    @property
    def lb_policy(self) -> LbPolicy:
        return self.policy.load_balancer.policy


@dataclass(frozen=True)
class VirtualHost:
    """Routing for requests addressed to one service port.

    `authorities` are the `:authority` (Host header) values that select it, unique across the proxy.
    """

    service: HostPort
    authorities: tuple[str, ...]
    routes: tuple[Route, ...]
    origins: tuple[PolicyRef, ...] = ()

    __hash__ = cached_hash  # hashed as part of memo keys, often


@dataclass(frozen=True)
class OutboundHttp:
    """The sidecar's outbound HTTP proxy: where it listens, how it routes by authority, and what it does
    with authorities no service answers (ALLOW_ANY: forward to the named host; REGISTRY_ONLY: 502)."""

    address: SocketAddress
    virtual_hosts: tuple[VirtualHost, ...]
    outbound_policy: OutboundPolicy = OutboundPolicy.ALLOW_ANY
    # Some cluster resolves request authorities (resolution NONE): the listener needs the DFP filter.
    forwards_by_authority: bool = False


@dataclass(frozen=True)
class TcpChain:
    """One filter chain of a TCP listener: connections whose SNI is one of `server_names` (any, when
    empty) go to the weighted clusters."""

    clusters: tuple[WeightedCluster, ...]
    server_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class TcpListener:
    """A listener for one TCP/TLS service port on one of the service's `addresses` (its virtual IP)."""

    address: str
    port: int
    service: HostPort
    chains: tuple[TcpChain, ...]
    origins: tuple[PolicyRef, ...] = ()


@dataclass(frozen=True)
class Inbound:
    """The sidecar's inbound HTTP listener: traffic for the local app, forwarded to its ports.

    Requests whose `:authority` names one of `app_ports` (`host:9102`) go to that port, the rest to the
    first app port.
    """

    address: SocketAddress
    app_host: str
    app_ports: tuple[int, ...]
    # PeerAuthentication mode of each app port (model/peerauth.py); empty: PERMISSIVE everywhere
    mtls: tuple[tuple[int, MtlsMode], ...] = ()
    # the PeerAuthentications behind `mtls`
    origins: tuple[PolicyRef, ...] = ()
    # AuthorizationPolicies the inbound side enforces (model/authz.py); None: none apply
    authz: Authz | None = None

    def mode(self, port: int) -> MtlsMode:
        return dict(self.mtls).get(port, MtlsMode.PERMISSIVE)

    def ports_accepting(self, *, mtls: bool) -> tuple[int, ...]:
        if mtls:
            return tuple(p for p in self.app_ports if self.mode(p).accepts_mtls)
        return tuple(p for p in self.app_ports if self.mode(p).accepts_plaintext)


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
    tcp_listeners: tuple[TcpListener, ...] = ()
    inbound: Inbound | None = None
    # ALLOW_ANY needs the passthrough cluster; kept here so translation need not look into outbound_http.
    mesh_connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS
    # the MeshConfig behind mesh-wide defaults (outbound traffic policy, connect timeout), if any
    mesh_origins: tuple[PolicyRef, ...] = ()
    # Gateways only: listeners from Gateway servers, readiness, rate limits (model/gateway.py).
    gateway: GatewayConfig | None = None
    # Tracing and access logging for every HTTP connection manager of the proxy (model/telemetry.py).
    telemetry: ProxyTelemetry = field(default_factory=ProxyTelemetry)
    # Credential files the clusters' DestinationRule `tls` uses (model/mtls.py), served as SDS secrets.
    client_credentials: tuple[TlsCredential, ...] = ()
