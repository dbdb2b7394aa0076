"""Gateway (networking.istio.io): the servers (ports, protocols, hosts, TLS) of an ingress or egress gateway.

Mirrors istio/api `networking/v1/gateway.proto`: `selector` (labels of the gateway proxies, matched against
their node metadata `labels`) and `servers[]` with `port` (number, name, protocol, targetPort), `hosts`
(`[namespace/]host`, `*` and `*.suffix` wildcards allowed), `bind` (an IP) and `tls` (httpsRedirect, mode
PASSTHROUGH / SIMPLE / MUTUAL / ISTIO_MUTUAL, credentialName, min/maxProtocolVersion). Inline certificate
paths (`serverCertificate`, `privateKey`, `caCertificates`) are files on the gateway's own file system, as in
Istio: its Envoy reads them over SDS and reloads them when they change (translate/secrets.py); a
`credentialName` is read by the control plane (see `api/credentials.py`). ISTIO_MUTUAL (a mesh-internal
gateway) uses the mesh CA: the gateway's own workload certificate, and clients must present one that chains
to the mesh root. `port.targetPort` is the port the listener binds — Istio takes it from the gateway's
Kubernetes Service; here it is how port 80/443 are served by an unprivileged process.

A server is classified once, here, so later stages agree on what it is (`Server.kind`):

    HTTP          plain HTTP/HTTP2/GRPC (tls only for httpsRedirect)
    HTTPS         HTTP after TLS termination (HTTPS, or HTTP/HTTP2/GRPC with tls mode SIMPLE/MUTUAL)
    PASSTHROUGH   TLS/HTTPS with mode PASSTHROUGH (Istio: a `tls` without `mode` is PASSTHROUGH, enum 0)
    TLS           TLS with mode SIMPLE/MUTUAL: terminated, then TCP routes
    TCP           plain TCP (also MONGO, MYSQL, REDIS: Istio has no protocol filter for them either)
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from controlplane.api.meta import IstioModel, PolicyObject, PortNumber, Problem, duplicates

# MONGO, MYSQL and REDIS are TCP to Istio's gateways as well (no protocol filters): served as TCP.
GatewayProtocol = Literal["HTTP", "HTTPS", "HTTP2", "GRPC", "TLS", "TCP", "MONGO", "MYSQL", "REDIS"]
TLSMode = Literal["PASSTHROUGH", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]
TLSVersion = Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]
# Istio's API default for minProtocolVersion on gateways.
DEFAULT_MIN_TLS = "TLSV1_2"

_HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC"})
# `*`, `*.example.com` or a DNS name; lower case, like every host in Istio.
_SERVER_HOST = re.compile(r"\*|(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAMESPACE = re.compile(r"\*|\.|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class ServerKind(StrEnum):
    HTTP = "HTTP"
    HTTPS = "HTTPS"
    PASSTHROUGH = "PASSTHROUGH"
    TLS = "TLS"
    TCP = "TCP"


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _check_server_host(value: str) -> str:
    namespace, sep, host = value.rpartition("/")
    if sep and not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"invalid host {value!r}: namespace must be '*', '.' or a namespace name")
    if not _SERVER_HOST.fullmatch(host):
        raise ValueError(
            f"invalid host {value!r}: expected [namespace/]host with host '*', '*.domain' or a DNS name"
        )
    return value


def _check_ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"expected an IP address, got {value!r}") from None
    return value


ServerHost = Annotated[str, AfterValidator(_check_server_host)]


class GatewayPort(IstioModel):
    number: PortNumber
    name: str = Field(min_length=1)
    protocol: Annotated[GatewayProtocol, BeforeValidator(_upper)]
    # The port the listener binds when it differs from `number` (Istio: the Service's targetPort).
    target_port: PortNumber | None = None

    @property
    def bind_port(self) -> int:
        return self.target_port or self.number


class ServerTLSSettings(IstioModel):
    https_redirect: bool = False
    mode: TLSMode | None = None
    credential_name: str | None = Field(default=None, min_length=1)
    # Files on the gateway's own file system, read (and watched for rotation) by its Envoy over SDS.
    server_certificate: str | None = Field(default=None, min_length=1)
    private_key: str | None = Field(default=None, min_length=1)
    ca_certificates: str | None = Field(default=None, min_length=1)
    min_protocol_version: TLSVersion | None = None
    max_protocol_version: TLSVersion | None = None


class Server(IstioModel):
    port: GatewayPort
    hosts: tuple[ServerHost, ...] = Field(min_length=1)
    bind: Annotated[str, AfterValidator(_check_ip)] | None = None
    tls: ServerTLSSettings | None = None
    name: str | None = None

    @property
    def kind(self) -> ServerKind:
        protocol = self.port.protocol
        mode = self.tls.mode if self.tls is not None else None
        terminated = mode in ("SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
        if protocol in _HTTP_PROTOCOLS:
            return ServerKind.HTTPS if terminated else ServerKind.HTTP
        if protocol == "HTTPS":
            return ServerKind.HTTPS if terminated else ServerKind.PASSTHROUGH
        if protocol == "TLS":
            return ServerKind.TLS if terminated else ServerKind.PASSTHROUGH
        return ServerKind.TCP

    @property
    def bind_address(self) -> str:
        # Istio binds gateway listeners on every address unless `bind` says otherwise.
        return self.bind or "0.0.0.0"


def split_server_host(value: str) -> tuple[str, str]:
    """`ns/host` → (ns, host); a host without namespace allows every namespace (`*`)."""
    namespace, sep, host = value.rpartition("/")
    return (namespace if sep else "*"), host


class GatewaySpec(IstioModel):
    selector: dict[str, str] = Field(min_length=1)
    servers: tuple[Server, ...] = Field(min_length=1)


class Gateway(PolicyObject):
    KIND: ClassVar[str] = "Gateway"

    kind: Literal["Gateway"]
    spec: GatewaySpec

    def check(self) -> Iterator[Problem]:
        for index, server in enumerate(self.spec.servers):
            yield from _check_server(("spec", "servers", index), server)
        names = [s.port.name for s in self.spec.servers]
        for index in duplicates(list(names)):
            previous = names.index(names[index])
            same = self.spec.servers[index].port.number == self.spec.servers[previous].port.number
            if not same:
                yield Problem(
                    ("spec", "servers", index, "port", "name"), f"duplicate port name {names[index]!r}"
                )


def _check_server(path: tuple[str | int, ...], server: Server) -> Iterator[Problem]:
    for index in duplicates(list(server.hosts)):
        yield Problem((*path, "hosts", index), f"duplicate host {server.hosts[index]!r}")
    tls = server.tls
    kind = server.kind
    if server.port.protocol in ("HTTPS", "TLS") and tls is None:
        yield Problem((*path, "tls"), f"a {server.port.protocol} server needs tls (mode and credentialName)")
        return
    if tls is None:
        return
    files = (tls.server_certificate, tls.private_key)
    if tls.mode == "ISTIO_MUTUAL":
        if tls.credential_name is not None or any(f is not None for f in (*files, tls.ca_certificates)):
            # the gateway's own mesh certificate (SDS `default`) terminates; clients must be mesh workloads
            yield Problem((*path, "tls", "credentialName"),
                          "ISTIO_MUTUAL uses the mesh certificate: no credentialName or certificate files")
    elif tls.credential_name is not None and any(f is not None for f in (*files, tls.ca_certificates)):
        yield Problem((*path, "tls", "credentialName"), "set either credentialName or certificate file paths")
    elif any(f is not None for f in files) and None in files:
        missing = "privateKey" if tls.private_key is None else "serverCertificate"
        yield Problem((*path, "tls", missing), "serverCertificate and privateKey go together")
    elif kind in (ServerKind.HTTPS, ServerKind.TLS) and tls.credential_name is None and None in files:
        yield Problem(
            (*path, "tls", "credentialName"),
            f"tls mode {tls.mode} needs a credentialName (or serverCertificate and privateKey)",
        )
    mutual_files = tls.mode == "MUTUAL" and tls.credential_name is None and tls.server_certificate is not None
    if kind in (ServerKind.HTTPS, ServerKind.TLS) and mutual_files and tls.ca_certificates is None:
        yield Problem((*path, "tls", "caCertificates"), "tls mode MUTUAL needs caCertificates")
    if tls.https_redirect and kind is not ServerKind.HTTP:
        yield Problem((*path, "tls", "httpsRedirect"), "httpsRedirect applies to plain HTTP servers only")
    if kind is ServerKind.TCP and tls.mode is not None:
        yield Problem((*path, "tls", "mode"), "a TCP server cannot have tls; use protocol TLS")
    if kind in (ServerKind.PASSTHROUGH, ServerKind.HTTP) and tls.credential_name is not None:
        yield Problem((*path, "tls", "credentialName"), "credentialName needs tls mode SIMPLE or MUTUAL")
    if kind in (ServerKind.PASSTHROUGH, ServerKind.HTTP) and tls.server_certificate is not None:
        message = "serverCertificate needs tls mode SIMPLE or MUTUAL"
        yield Problem((*path, "tls", "serverCertificate"), message)
    order = ("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3")
    low, high = tls.min_protocol_version, tls.max_protocol_version
    if low and high and "TLS_AUTO" not in (low, high) and order.index(low) > order.index(high):
        yield Problem((*path, "tls", "maxProtocolVersion"), "maxProtocolVersion is below minProtocolVersion")
