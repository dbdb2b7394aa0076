"""Every naming scheme of the Envoy resources we generate, in one place.

Names are part of the contract with Envoy (RDS and EDS names must match what LDS and CDS refer to), with
operators (stats and admin output are keyed by them) and with Istio users (who know `outbound|80||host`),
so they are defined here once and nowhere else. They follow Istio where Istio has a scheme:

    cluster         outbound|<port>|<subset>|<host>    (pilot/pkg/model/service.go BuildSubsetKey)
    virtual host    <host>:<port>
    route           <http name>[.<match name>] (empty without an http name), "default" for a default route

Hosts are used as written in the ServiceEntry. Istio would qualify short Kubernetes names to FQDNs
(`reviews` → `reviews.default.svc.cluster.local`); we have no Kubernetes registry, so we do not.
"""

from __future__ import annotations

from controlplane.build.model import ClusterRef, HostPort, Route

# The sidecar's single outbound HTTP listener and its route configuration. Istio names route configurations
# by port ("80"); we have one listener for all ports (the app's HTTP proxy), so one name for both.
OUTBOUND_HTTP_LISTENER = "outbound_http"
OUTBOUND_HTTP_ROUTE_CONFIG = "outbound_http"
OUTBOUND_HTTP_STAT_PREFIX = "outbound_http"

# Istio's name for the route a service without a VirtualService gets.
DEFAULT_ROUTE = "default"

# Well-known Envoy extension names (filter `name` fields).
HTTP_CONNECTION_MANAGER = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def outbound_cluster(ref: ClusterRef) -> str:
    """`outbound|9080|v2|reviews` — Istio's subset key; the subset part is empty without a subset."""
    return f"outbound|{ref.service.port}|{ref.subset}|{ref.service.host}"


def virtual_host(service: HostPort) -> str:
    return f"{service.host}:{service.port}"


def route(route: Route) -> str:
    """Istio's route name: the VirtualService `http[].name`, with `.match[].name` appended when both are set.

    Unnamed entries get an empty name, as in Istio; Envoy does not need route names to be unique.
    """
    if route.is_default:
        return DEFAULT_ROUTE
    if not route.http_name:
        return ""
    return f"{route.http_name}.{route.match_name}" if route.match_name else route.http_name
