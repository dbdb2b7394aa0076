"""Listeners: the sidecar's outbound HTTP listener (its applications' HTTP proxy).

One listener at the proxy's `outbound_address` with a single HTTP connection manager. Routes come over
RDS on the ADS stream (one route configuration, `names.OUTBOUND_HTTP_ROUTE_CONFIG`), so route changes
never drain the listener's connections the way a listener update would.

Applications reach services through it either as an explicit HTTP proxy (`HTTP_PROXY`, requests in
absolute form `GET http://host:port/path`) or by sending plain requests with `Host: host[:port]`; in both
cases Envoy routes on the resulting `:authority`.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import any_pb2
from google.protobuf.message import Message

from controlplane.build.model import OutboundHttp
from controlplane.translate import names
from controlplane.translate.ads import ads_config_source


def outbound_http_listener(outbound: OutboundHttp) -> listener_pb2.Listener:
    socket = address_pb2.SocketAddress(address=outbound.address.host, port_value=outbound.address.port)
    chain = listener_components_pb2.FilterChain(
        filters=[
            listener_components_pb2.Filter(
                name=names.HTTP_CONNECTION_MANAGER, typed_config=_pack(_connection_manager())
            )
        ]
    )
    return listener_pb2.Listener(
        name=names.OUTBOUND_HTTP_LISTENER,
        address=address_pb2.Address(socket_address=socket),
        filter_chains=[chain],
    )


def _connection_manager() -> hcm.HttpConnectionManager:
    manager = hcm.HttpConnectionManager(
        stat_prefix=names.OUTBOUND_HTTP_STAT_PREFIX,
        codec_type=hcm.HttpConnectionManager.AUTO,
        rds=hcm.Rds(config_source=ads_config_source(), route_config_name=names.OUTBOUND_HTTP_ROUTE_CONFIG),
        http_filters=[hcm.HttpFilter(name=names.ROUTER, typed_config=_pack(router_pb2.Router()))],
    )
    # Explicit-proxy clients send absolute-form request lines; say so rather than rely on Envoy's default.
    manager.http_protocol_options.allow_absolute_url.value = True
    return manager


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
