"""`build_gateway`: the model of a gateway proxy — the Gateways that select it, as listeners.

A Gateway applies to a proxy of role `gateway` whose node metadata `labels` include its `selector`. Every
server is placed on the listener for its bind address (`bind`, default 0.0.0.0) and bind port
(`port.targetPort`, default `port.number`):

- plain HTTP servers of one port share one filter chain and one route table (Istio's `http.<port>`); a
  server with `tls.httpsRedirect` makes its virtual hosts answer 301 to https;
- each TLS-terminating HTTP server (HTTPS, or HTTP/HTTP2/GRPC with SIMPLE/MUTUAL) is a chain matching its
  hosts as SNI, with its own route table; ALPN offers h2 and http/1.1, so gRPC clients get HTTP/2;
- a TLS server with SIMPLE/MUTUAL terminates TLS and proxies TCP; with PASSTHROUGH its bound
  VirtualServices' `tls[]` matches become SNI chains straight to the destination (the client sees the
  backend's certificate) — the egress gateway pattern;
- a TCP server proxies to its bound VirtualService's first applicable `tcp[]` entry.

Servers that cannot share a listener with an earlier one, and hosts or SNI names an earlier server already
serves on the port, are skipped (validation reports them when it can tell, see api/validate_gateways.py).
Every cluster of the mesh is included, as Istio does for gateways.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from controlplane.api.common import labels_match
from controlplane.api.gateway import (
    DEFAULT_MIN_TLS,
    Gateway,
    Server,
    ServerKind,
    ServerTLSSettings,
    split_server_host,
)
from controlplane.api.policyset import PolicySet
from controlplane.model.authz import build_authz
from controlplane.model.clusters import build_clusters
from controlplane.model.destinationrules import destination_rules
from controlplane.model.gateway_bind import Binder
from controlplane.model.gateway_ratelimit import build_rate_limits
from controlplane.model.gatewaymodel import (
    GatewayChain,
    GatewayConfig,
    GatewayListener,
    GatewayRouteTable,
    GatewayVirtualHost,
    ServerRef,
    TlsCredential,
    TlsTermination,
    TlsVersion,
)
from controlplane.model.identity import ProxyIdentity, Role
from controlplane.model.proxy_model import DEFAULT_CONNECT_TIMEOUT_MS, ProxyModel
from controlplane.model.services import origin_of, service_registry

# What TLS-terminated HTTP offers in ALPN: HTTP/2 first, so gRPC works (Istio's gateway default).
HTTP_ALPN = ("h2", "http/1.1")

_FAMILY = {
    ServerKind.HTTP: "http",
    ServerKind.HTTPS: "tls",
    ServerKind.PASSTHROUGH: "tls",
    ServerKind.TLS: "tls",
    ServerKind.TCP: "tcp",
}


@dataclass
class _Slot:
    """The servers placed on one listener so far."""

    family: str
    server_port: int
    servers: list[tuple[Gateway, Server]] = field(default_factory=list)


def selected_gateways(policy: PolicySet, proxy: ProxyIdentity) -> list[Gateway]:
    return [gw for gw in policy.of_kind(Gateway) if labels_match(gw.spec.selector, proxy.label_map)]


def build_gateway(policy: PolicySet, proxy: ProxyIdentity) -> ProxyModel:
    registry = service_registry(policy)
    rules = destination_rules(policy, registry, proxy)
    mesh = policy.mesh_config()
    connect_timeout_ms = (mesh.spec.connect_timeout if mesh else None) or DEFAULT_CONNECT_TIMEOUT_MS
    limits = build_rate_limits(policy, registry, proxy)
    binder = Binder(policy, registry, rules, proxy, limits)
    slots: dict[tuple[str, int], _Slot] = {}
    for gw in selected_gateways(policy, proxy):
        for server in gw.spec.servers:
            key = (server.bind or proxy.gateway_bind, server.port.bind_port)
            slot = slots.setdefault(key, _Slot(_FAMILY[server.kind], server.port.number))
            tls = server.tls
            if tls is not None and tls.credential_name and tls.credential_name not in policy.credentials:
                continue  # no certificate: validation reported it; the other servers still work
            if slot.family == _FAMILY[server.kind] and not (slot.family == "tcp" and slot.servers):
                slot.servers.append((gw, server))
    health = proxy.health_address
    if health is not None:
        slots.pop((health.host, health.port), None)  # the readiness listener owns its address and port
    listeners = []
    for (address, port), slot in sorted(slots.items()):
        chains = _chains(binder, slot)
        if chains:
            origins = tuple(sorted({origin_of(policy, gw) for gw, _ in slot.servers}))
            listeners.append(
                GatewayListener(
                    address,
                    port,
                    slot.server_port,
                    chains,
                    inspects_tls=slot.family == "tls",
                    origins=origins,
                )
            )
    used = sorted({c.tls.credential for listener in listeners for c in listener.chains
                   if c.tls is not None and not c.tls.istio_mutual})
    files = _file_credentials(slots.values())
    credentials = tuple(
        TlsCredential(name, found.cert_chain, found.private_key, found.ca_cert)
        for name in used
        if (found := policy.credentials.get(name)) is not None
    ) + tuple(files[name] for name in used if name in files)
    return ProxyModel(
        role=Role.GATEWAY,
        clusters=build_clusters(policy, registry, rules, connect_timeout_ms, proxy.locality),
        mesh_connect_timeout_ms=connect_timeout_ms,
        gateway=GatewayConfig(tuple(listeners), health, limits, credentials,
                              build_authz(policy, proxy.namespace, proxy.label_map)),
    )


def _chains(binder: Binder, slot: _Slot) -> tuple[GatewayChain, ...]:
    if slot.family == "http":
        return (GatewayChain(routes=GatewayRouteTable(slot.server_port, _merged_hosts(binder, slot))),)
    if slot.family == "tcp":
        gw, server = slot.servers[0]
        clusters = binder.tcp_route(gw, server)
        return (GatewayChain(tcp=clusters),) if clusters else ()
    chains: list[GatewayChain] = []
    for gw, server in slot.servers:
        if server.kind is ServerKind.PASSTHROUGH:
            chains.extend(binder.passthrough_chains(gw, server))
            continue
        names = _server_names(server)
        if server.kind is ServerKind.HTTPS:
            table = GatewayRouteTable(
                server.port.number,
                tuple(binder.virtual_hosts(gw, server)),
                ServerRef(gw.metadata.namespace, gw.metadata.name, server.port.name),
            )
            chains.append(GatewayChain(names, _termination(server, HTTP_ALPN), routes=table))
        else:
            clusters = binder.tcp_route(gw, server)
            if clusters:
                chains.append(GatewayChain(names, _termination(server, ()), tcp=clusters))
    # Envoy refuses two chains with the same match; the first server (by Gateway namespace/name) wins.
    unique: dict[tuple[str, ...], GatewayChain] = {}
    for chain in chains:
        unique.setdefault(chain.server_names, chain)
    return tuple(unique.values())


def _merged_hosts(binder: Binder, slot: _Slot) -> tuple[GatewayVirtualHost, ...]:
    hosts: dict[str, GatewayVirtualHost] = {}
    for gw, server in slot.servers:
        for vhost in binder.virtual_hosts(gw, server):
            hosts.setdefault(vhost.host, vhost)
    return tuple(hosts[host] for host in sorted(hosts))


def _server_names(server: Server) -> tuple[str, ...]:
    names = {split_server_host(host)[1] for host in server.hosts}
    # `*` admits any SNI (and clients that send none): no server_names at all.
    return () if "*" in names else tuple(sorted(names))


def _termination(server: Server, alpn: tuple[str, ...]) -> TlsTermination:
    tls = server.tls
    assert tls is not None  # ServerKind HTTPS/TLS: a credentialName, files, or ISTIO_MUTUAL
    istio_mutual = tls.mode == "ISTIO_MUTUAL"
    low = tls.min_protocol_version or DEFAULT_MIN_TLS
    return TlsTermination(
        credential="" if istio_mutual else tls.credential_name or file_credential_name(tls),
        mutual=tls.mode in ("MUTUAL", "ISTIO_MUTUAL"),
        istio_mutual=istio_mutual,
        min_version=_version(low),
        max_version=_version(tls.max_protocol_version) if tls.max_protocol_version else None,
        alpn=alpn,
    )


def file_credential_name(tls: ServerTLSSettings) -> str:
    """Istio's SDS name for certificate files (`file-cert:<cert>~<key>`), plus the CA file when set."""
    name = f"file-cert:{tls.server_certificate}~{tls.private_key}"
    return f"{name}~{tls.ca_certificates}" if tls.ca_certificates else name


def _file_credentials(slots: Iterable[_Slot]) -> dict[str, TlsCredential]:
    found: dict[str, TlsCredential] = {}
    for slot in slots:
        for _, server in slot.servers:
            tls = server.tls
            if tls is None or tls.credential_name or not (tls.server_certificate and tls.private_key):
                continue
            found[file_credential_name(tls)] = TlsCredential(
                file_credential_name(tls), b"", b"", None,
                files=(tls.server_certificate, tls.private_key, tls.ca_certificates),
            )
    return found


def _version(istio: str) -> TlsVersion:
    # Istio's TLSV1_2 → Envoy's TLSv1_2.
    return TlsVersion.AUTO if istio == "TLS_AUTO" else TlsVersion(istio.replace("TLSV", "TLSv"))


__all__ = ["build_gateway", "selected_gateways"]
