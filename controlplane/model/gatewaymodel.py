"""Model of what a gateway proxy does: its listeners (one per bind address and port), their filter chains
(SNI, TLS termination, HTTP route table or TCP destinations), the readiness listener and rate limits.

Like the rest of the model: frozen dataclasses of plain values, sorted tuples, no Envoy types, no names
(translate/names.py names things from these values).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from controlplane.model.authz import Authz
from controlplane.model.identity import SocketAddress
from controlplane.model.refs import PolicyRef
from controlplane.model.routemodel import Route, WeightedCluster


class TlsVersion(StrEnum):
    """Envoy's TlsParameters.TlsProtocol names (Istio's TLSV1_2 is Envoy's TLSv1_2)."""

    AUTO = "TLS_AUTO"
    V1_0 = "TLSv1_0"
    V1_1 = "TLSv1_1"
    V1_2 = "TLSv1_2"
    V1_3 = "TLSv1_3"


@dataclass(frozen=True)
class TlsTermination:
    """Downstream TLS: the certificate (and, when `mutual`, the CA client certificates must chain to) come
    over SDS as secrets derived from `credential`."""

    credential: str
    mutual: bool = False
    # ISTIO_MUTUAL: the gateway's mesh certificate (`default`) and the mesh root (`ROOTCA`), not `credential`
    istio_mutual: bool = False
    min_version: TlsVersion = TlsVersion.V1_2
    max_version: TlsVersion | None = None
    alpn: tuple[str, ...] = ()


@dataclass(frozen=True)
class GatewayRoute:
    """A route plus the rate-limit keys it carries (None: no such limit applies to it)."""

    route: Route
    destination_limit: str | None = None
    route_limit: str | None = None


@dataclass(frozen=True)
class GatewayVirtualHost:
    """The routes for one host bound from a VirtualService; `require_tls` answers plain HTTP with a 301 to
    https (Istio's httpsRedirect)."""

    host: str
    port: int
    routes: tuple[GatewayRoute, ...]
    require_tls: bool = False
    origins: tuple[PolicyRef, ...] = ()


@dataclass(frozen=True)
class ServerRef:
    """Which Gateway server an HTTPS route table belongs to (Istio names it after all three)."""

    namespace: str
    gateway: str
    port_name: str


@dataclass(frozen=True)
class GatewayRouteTable:
    """One RouteConfiguration: all plain HTTP servers of a port share one (`server` None); each TLS-terminated
    HTTP server has its own."""

    port: int
    virtual_hosts: tuple[GatewayVirtualHost, ...]
    server: ServerRef | None = None


@dataclass(frozen=True)
class GatewayChain:
    """One filter chain: connections with one of `server_names` as SNI (any when empty), optionally
    TLS-terminated, then either HTTP routing (`routes`) or a TCP proxy to `tcp`."""

    server_names: tuple[str, ...] = ()
    tls: TlsTermination | None = None
    routes: GatewayRouteTable | None = None
    tcp: tuple[WeightedCluster, ...] = ()


@dataclass(frozen=True)
class GatewayListener:
    """What binds `address:port`: the servers' `bind` (default 0.0.0.0) and `targetPort` (default number)."""

    address: str
    port: int
    server_port: int
    chains: tuple[GatewayChain, ...]
    # The listener needs the SNI (TLS servers): add tls_inspector.
    inspects_tls: bool = False
    origins: tuple[PolicyRef, ...] = ()


@dataclass(frozen=True)
class TokenBucket:
    requests: int
    interval_ms: int


@dataclass(frozen=True)
class RateLimits:
    """Merged RateLimitPolicies of a gateway. Keys of `destinations` are service hosts, of `routes`
    `namespace/virtualservice/http-name`; routes refer to them (GatewayRoute)."""

    gateway: TokenBucket | None = None
    client_ip: TokenBucket | None = None
    destinations: tuple[tuple[str, TokenBucket], ...] = ()
    routes: tuple[tuple[str, TokenBucket], ...] = ()
    # the RateLimitPolicies merged here (provenance: a limit that cannot be translated names them)
    origins: tuple[PolicyRef, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.gateway or self.client_ip or self.destinations or self.routes)


@dataclass(frozen=True)
class TlsCredential:
    """The certificate files of a credential the listeners use (served as SDS secrets)."""

    name: str
    cert_chain: bytes
    private_key: bytes
    ca_cert: bytes | None = None
    # Gateway `serverCertificate`, `privateKey`, `caCertificates` (paths on the gateway's file system):
    # the secrets name the files instead of carrying their content.
    # DestinationRule files may be a CA alone (SIMPLE): no certificate, no key.
    files: tuple[str | None, str | None, str | None] | None = None


@dataclass(frozen=True)
class GatewayConfig:
    listeners: tuple[GatewayListener, ...]
    # Where /healthz/ready is served; None: nowhere (node metadata `health_address` absent).
    health: SocketAddress | None
    rate_limits: RateLimits = RateLimits()
    # Every credential a chain terminates TLS with, sorted by name.
    credentials: tuple[TlsCredential, ...] = ()
    # AuthorizationPolicies selecting the gateway (model/authz.py); None: none apply
    authz: Authz | None = None
