"""Sidecar TCP and TLS listeners: one per (virtual IP, TCP port) of every service with `addresses`.

Istio captures outbound connections with iptables and has a listener `0.0.0.0_<port>` (or `<vip>_<port>`)
per TCP service port. We have no capture, so an app must connect to an address the sidecar listens on:
the ServiceEntry's `addresses` are that address (loopback aliases such as 127.0.0.2 work without root on
Linux). A TCP port of a service without `addresses` gets a cluster but no listener (docs/compatibility.md).

Routing: the first VirtualService `tcp[]` entry whose match applies (no match, or `port` equal) — a
weighted tcp_proxy; else for TLS/HTTPS ports the `tls[]` entries, one filter chain per match with
`server_names` = its sniHosts (unmatched SNI: no chain, connection closed); else straight to the service's
own cluster (TLS ports: a chain matching the host as SNI). `sourceLabels` / `gateways` in matches are
evaluated for this proxy, as for HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from controlplane.api.common import labels_match
from controlplane.api.destination import RouteDestination
from controlplane.api.policyset import PolicySet
from controlplane.api.serviceentry import SNI_PROTOCOLS, ServicePort
from controlplane.api.virtualservice import (
    MESH_GATEWAY,
    L4MatchAttributes,
    TLSMatchAttributes,
    VirtualService,
)
from controlplane.model.identity import ProxyIdentity
from controlplane.model.proxy_model import ClusterRef, HostPort, PolicyRef, TcpChain, TcpListener
from controlplane.model.refs import sorted_refs
from controlplane.model.routemodel import WeightedCluster
from controlplane.model.routing import mesh_routing
from controlplane.model.services import Registry, Service, origin_of, resolve_port


def build_tcp_listeners(
    policy: PolicySet, registry: Registry, proxy: ProxyIdentity,
    routing: Mapping[str, VirtualService] | None = None,
) -> tuple[TcpListener, ...]:
    """Listeners sorted by (address, port). Services sharing an address and port (the hosts of one
    ServiceEntry) share the listener: their chains are merged, the first chain for an SNI set (or the
    first SNI-less chain) wins, in host order. `routing`: `mesh_routing(policy, registry)`, if known."""
    routing = mesh_routing(policy, registry) if routing is None else routing
    merged: dict[tuple[str, int], TcpListener] = {}
    for host, service in registry.services.items():
        vs = routing.get(host)
        for port in sorted(service.ports, key=lambda p: p.number):
            if not port.is_tcp or not service.spec.addresses:
                continue
            chains = _chains(registry, proxy, service, port, vs)
            if not chains:
                continue
            origins: list[PolicyRef] = [service.origin] + ([origin_of(policy, vs)] if vs else [])
            for address in service.spec.addresses:
                key = (address, port.number)
                listener = merged.get(key)
                if listener is None:
                    merged[key] = TcpListener(
                        address, port.number, HostPort(host, port.number), chains, sorted_refs(origins)
                    )
                    continue
                taken = {chain.server_names for chain in listener.chains}
                extra = tuple(chain for chain in chains if chain.server_names not in taken)
                all_origins = tuple(sorted({*listener.origins, *origins}))
                merged[key] = replace(listener, chains=listener.chains + extra, origins=all_origins)
    return tuple(merged[key] for key in sorted(merged))


def _chains(
    registry: Registry, proxy: ProxyIdentity, service: Service, port: ServicePort, vs: VirtualService | None
) -> tuple[TcpChain, ...]:
    own = (WeightedCluster(ClusterRef(HostPort(service.host, port.number)), 100),)
    # TLS without routes: match the service's own host as SNI (Istio), so hosts sharing an address split.
    own_chain = TcpChain(own, (service.host,) if port.protocol in SNI_PROTOCOLS else ())
    if vs is None:
        return (own_chain,)
    namespace = vs.metadata.namespace
    for tcp in vs.spec.tcp:
        if not tcp.match or any(_applies(proxy, m, port.number) for m in tcp.match):
            clusters = _weighted(registry, tcp.route, namespace)
            return (TcpChain(clusters),) if clusters else ()
    if port.protocol in SNI_PROTOCOLS and vs.spec.tls:
        chains: list[TcpChain] = []
        for tls in vs.spec.tls:
            clusters = _weighted(registry, tls.route, namespace)
            for match in tls.match:
                if clusters and _applies(proxy, match, port.number):
                    chains.append(TcpChain(clusters, tuple(sorted(match.sni_hosts))))
        return tuple(dict.fromkeys(chains))
    return (own_chain,)


def _applies(proxy: ProxyIdentity, match: L4MatchAttributes | TLSMatchAttributes, port: int) -> bool:
    if match.port is not None and match.port != port:
        return False
    if match.source_labels and not labels_match(match.source_labels, proxy.label_map):
        return False
    return match.gateways is None or MESH_GATEWAY in match.gateways


def _weighted(
    registry: Registry, route: Sequence[RouteDestination], namespace: str
) -> tuple[WeightedCluster, ...]:
    out: list[WeightedCluster] = []
    single = len(route) == 1
    for item in route:
        hostport = resolve_port(registry, item.destination, namespace)
        weight = 100 if single and item.weight is None else item.weight or 0
        if hostport is not None and weight > 0:
            out.append(WeightedCluster(ClusterRef(hostport, item.destination.subset or ""), weight))
    return tuple(out)
