"""Gateway route tables: GatewayRouteTable → RouteConfiguration (Istio's `http.<port>` and
`https.<port>.<portName>.<gateway>.<namespace>`).

One virtual host per bound host, named `<host>:<port>`, with the host as its only domain and
`ignore_port_in_host_matching`, so `Host: api.example.com:8080` (a client of a remapped port) matches too.
A table nothing is bound to gets a `blackhole:<port>` virtual host without routes: every request is a 404,
as in Istio. `require_tls: ALL` is Istio's httpsRedirect: Envoy answers 301 with the https URL before any
route is looked at. Routes are the sidecar's (translate/routes.py) plus rate-limit metadata.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from controlplane.model.gatewaymodel import GatewayRouteTable, GatewayVirtualHost
from controlplane.translate import names
from controlplane.translate.ratelimit import apply_route_limits
from controlplane.translate.routes import translate_route


def route_table_name(table: GatewayRouteTable) -> str:
    server = table.server
    if server is None:
        return names.gateway_http_route_config(table.port)
    return names.gateway_https_route_config(table.port, server.port_name, server.gateway, server.namespace)


def gateway_route_config(table: GatewayRouteTable) -> route_pb2.RouteConfiguration:
    virtual_hosts = [_virtual_host(vhost) for vhost in table.virtual_hosts]
    if not virtual_hosts:
        virtual_hosts.append(rc.VirtualHost(name=names.gateway_blackhole(table.port), domains=["*"]))
    return route_pb2.RouteConfiguration(
        name=route_table_name(table), virtual_hosts=virtual_hosts, ignore_port_in_host_matching=True
    )


def _virtual_host(vhost: GatewayVirtualHost) -> rc.VirtualHost:
    routes = []
    for route in vhost.routes:
        out = translate_route(route.route)
        apply_route_limits(out, route)
        routes.append(out)
    out_vhost = rc.VirtualHost(
        name=names.gateway_virtual_host(vhost.host, vhost.port), domains=[vhost.host], routes=routes
    )
    if vhost.require_tls:
        out_vhost.require_tls = rc.VirtualHost.ALL
    return out_vhost
