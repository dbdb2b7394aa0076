"""TCP and TLS listeners: `<address>_<port>` with one tcp_proxy filter chain per model chain.

A chain with `server_names` matches on the TLS SNI, which the `tls_inspector` listener filter reads from
the ClientHello (it is added only when some chain needs it: plain TCP clients send no ClientHello and the
inspector would wait for one until its timeout). One cluster → `cluster`; several → `weighted_clusters`.
"""

from __future__ import annotations

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from controlplane.model.proxy_model import TcpChain, TcpListener
from controlplane.translate import names
from controlplane.translate.listeners import socket_address
from controlplane.translate.protos import pack


def tcp_listener(listener: TcpListener) -> listener_pb2.Listener:
    out = listener_pb2.Listener(
        name=names.tcp_listener(listener.address, listener.port),
        address=socket_address(listener.address, listener.port),
        filter_chains=[_chain(listener, chain) for chain in listener.chains],
    )
    if any(chain.server_names for chain in listener.chains):
        out.listener_filters.append(
            listener_components_pb2.ListenerFilter(
                name=names.TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector())
            )
        )
    return out


def _chain(listener: TcpListener, chain: TcpChain) -> listener_components_pb2.FilterChain:
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=names.outbound_cluster(chain.clusters[0].cluster))
    if len(chain.clusters) == 1:
        proxy.cluster = names.outbound_cluster(chain.clusters[0].cluster)
    else:
        proxy.stat_prefix = names.tcp_listener(listener.address, listener.port)
        for weighted in chain.clusters:
            proxy.weighted_clusters.clusters.add(
                name=names.outbound_cluster(weighted.cluster), weight=weighted.weight
            )
    out = listener_components_pb2.FilterChain(
        filters=[listener_components_pb2.Filter(name=names.TCP_PROXY, typed_config=pack(proxy))]
    )
    if chain.server_names:
        out.filter_chain_match.server_names.extend(chain.server_names)
    return out
