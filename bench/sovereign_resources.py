"""Envoy resources as JSON-style dicts for bench/vs_sovereign.py: sovereign's templates and the static floor.

The shapes mirror what `controlplane serve` sends one sidecar for N ServiceEntries (read from a real
Envoy's /config_dump): an `outbound|8080||<host>` cluster per service (LEAST_REQUEST, 10 s connect
timeout, unlimited circuit breakers), the PassthroughCluster, one `outbound_http` listener and one
`outbound_http` route table with a virtual host per service. Two differences, by design of the
comparison: the endpoints are inline (`STATIC` clusters with a `load_assignment`, how sovereign's
templates serve them; our server sends `EDS` clusters plus ClusterLoadAssignments) and the config
sources are sovereign's REST API instead of ADS.

Sovereign loads the template files vs_sovereign.py writes (`from sovereign_resources import
clusters_template as call`): it calls `call(**context)` per discovery request, with the template context
(`services`: the compact service list, a JSON file) deep-copied per request, as sovereign does. The
static floor puts the same dicts in Envoy's bootstrap.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Json = dict[str, Any]
TYPE = "type.googleapis.com/"
PORT = 8080


def services(count: int) -> list[Json]:
    """The policy as data: what the 5,000 ServiceEntries say (host, port, two endpoints each)."""
    return [
        {"host": f"svc-{index:05d}.bench.internal", "port": PORT,
         "endpoints": [["127.0.0.1", 10_000 + index], ["127.0.0.2", 10_000 + index]]}
        for index in range(count)
    ]  # fmt: skip


def cluster_name(service: Json) -> str:
    return f"outbound|{service['port']}||{service['host']}"


def _socket(address: str, port: int) -> Json:
    return {"socket_address": {"address": address, "port_value": port}}


def cluster(service: Json) -> Json:
    name = cluster_name(service)
    unlimited = 4_294_967_295
    return {
        "@type": TYPE + "envoy.config.cluster.v3.Cluster",
        "name": name,
        "type": "STATIC",
        "connect_timeout": "10s",
        "lb_policy": "LEAST_REQUEST",
        "circuit_breakers": {"thresholds": [{
            "max_connections": unlimited, "max_pending_requests": unlimited, "max_requests": unlimited,
            "max_retries": unlimited, "track_remaining": True,
        }]},
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": _socket(address, port)}, "health_status": "HEALTHY",
                 "load_balancing_weight": 1}
                for address, port in service["endpoints"]
            ]}],
            "policy": {"overprovisioning_factor": 140},
        },
    }  # fmt: skip


def _dns_cache() -> Json:
    return {"name": "passthrough_dns_cache", "dns_lookup_family": "V4_PREFERRED"}


def passthrough_cluster() -> Json:
    return {
        "@type": TYPE + "envoy.config.cluster.v3.Cluster",
        "name": "PassthroughCluster",
        "connect_timeout": "10s",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {"name": "envoy.clusters.dynamic_forward_proxy", "typed_config": {
            "@type": TYPE + "envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig",
            "dns_cache_config": _dns_cache(),
        }},
    }  # fmt: skip


def clusters(all_services: Iterable[Json]) -> list[Json]:
    return [passthrough_cluster(), *(cluster(service) for service in all_services)]


def route_config(all_services: Iterable[Json]) -> Json:
    retry = {
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2,
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
            "@type": TYPE + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
        "host_selection_retry_max_attempts": "5",
        "retriable_status_codes": [503],
    }  # fmt: skip
    hosts = [
        {"name": f"{s['host']}:{s['port']}", "domains": [f"{s['host']}:{s['port']}", s["host"]],
         "routes": [{"name": "default", "match": {"prefix": "/"},
                     "route": {"cluster": cluster_name(s), "timeout": "0s", "retry_policy": retry}}]}
        for s in all_services
    ]  # fmt: skip
    return {"@type": TYPE + "envoy.config.route.v3.RouteConfiguration", "name": "outbound_http",
            "virtual_hosts": hosts}  # fmt: skip


def listener(address: str, port: int, rds: Json | None) -> Json:
    """The outbound HTTP listener; `rds` is the route table's config source, None: the table inline."""
    hcm: Json = {
        "@type": TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "outbound_http",
        "http_filters": [
            {"name": "envoy.filters.http.fault",
             "typed_config": {"@type": TYPE + "envoy.extensions.filters.http.fault.v3.HTTPFault"}},
            {"name": "envoy.filters.http.cors",
             "typed_config": {"@type": TYPE + "envoy.extensions.filters.http.cors.v3.Cors"}},
            {"name": "envoy.filters.http.dynamic_forward_proxy", "typed_config": {
                "@type": TYPE + "envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig",
                "dns_cache_config": _dns_cache()}},
            {"name": "envoy.filters.http.router",
             "typed_config": {"@type": TYPE + "envoy.extensions.filters.http.router.v3.Router"}},
        ],
        "http_protocol_options": {"allow_absolute_url": True},
    }  # fmt: skip
    if rds is None:
        hcm["route_config"] = {}  # filled by the static floor
    else:
        hcm["rds"] = {"config_source": rds, "route_config_name": "outbound_http"}
    return {
        "@type": TYPE + "envoy.config.listener.v3.Listener",
        "name": "outbound_http",
        "address": _socket(address, port),
        "filter_chains": [{"filters": [
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
        "traffic_direction": "OUTBOUND",
    }  # fmt: skip


def rest_source(cluster_name_: str, refresh_s: float) -> Json:
    """Sovereign's xDS: Envoy's REST-JSON polling (sovereign 0.32 has no gRPC)."""
    return {"resource_api_version": "V3", "api_config_source": {
        "api_type": "REST", "transport_api_version": "V3", "cluster_names": [cluster_name_],
        "refresh_delay": f"{refresh_s}s", "request_timeout": "30s"}}  # fmt: skip


# --- sovereign's template entry points: sovereign calls them with its template context as keywords ---


def clusters_template(services: list[Json], **_: Any) -> list[Json]:
    return clusters(services)


def routes_template(services: list[Json], **_: Any) -> list[Json]:
    return [route_config(services)]


def listeners_template(listener_settings: Json, **_: Any) -> list[Json]:
    """`listener_settings`: {address, port, rest_cluster, refresh_s} (a JSON file in the context)."""
    settings = listener_settings
    source = rest_source(settings["rest_cluster"], float(settings["refresh_s"]))
    return [listener(settings["address"], int(settings["port"]), source)]
