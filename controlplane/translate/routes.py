"""Routes: the sidecar's outbound route configuration — one virtual host per service port.

Virtual hosts, their domains (the model's authorities, already unique) and routes come from the model in
order; Envoy picks the virtual host by `:authority` and then the first route that matches. There is no
catch-all virtual host: an authority that names no service gets Envoy's own 404 (Istio's REGISTRY_ONLY
answers 502 instead; ALLOW_ANY passthrough needs an original-destination cluster we do not have).
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf import duration_pb2

from controlplane.build.model import OutboundHttp, Route, VirtualHost
from controlplane.translate import names


def outbound_route_config(outbound: OutboundHttp) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=names.OUTBOUND_HTTP_ROUTE_CONFIG,
        virtual_hosts=[_virtual_host(virtual_host) for virtual_host in outbound.virtual_hosts],
    )


def _virtual_host(virtual_host: VirtualHost) -> rc.VirtualHost:
    return rc.VirtualHost(
        name=names.virtual_host(virtual_host.service),
        domains=list(virtual_host.authorities),
        routes=[_route(route) for route in virtual_host.routes],
    )


def _route(route: Route) -> rc.Route:
    return rc.Route(
        name=names.route(route),
        match=rc.RouteMatch(prefix=route.match.prefix),
        route=rc.RouteAction(
            cluster=names.outbound_cluster(route.destination),
            # Istio disables Envoy's 15s default route timeout unless a VirtualService sets `timeout`:
            # long requests and streams must not be cut by a limit nobody configured.
            timeout=duration_pb2.Duration(seconds=0),
        ),
    )
