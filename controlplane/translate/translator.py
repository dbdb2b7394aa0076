"""`translate_proxy`: the translate stage's entry point — ProxyModel → Envoy resources.

Pure: the same model always gives byte-identical resources (resources are added in sorted name order,
and every repeated field is built from the model's sorted tuples), so the snapshot layer can version
resources by hashing their serialized bytes.

Consistency the xDS layer relies on holds by construction: every EDS cluster gets a ClusterLoadAssignment
of the same name, and every RDS name a listener refers to gets a RouteConfiguration. Each resource made
from policy records the objects it came from (`Resources.add(..., origins=...)`).
"""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.build.model import Discovery, OutboundPolicy, PolicyRef, ProxyModel
from controlplane.translate.clusters import translate_cluster
from controlplane.translate.endpoints import load_assignment
from controlplane.translate.gateway import gateway_resources
from controlplane.translate.inbound import inbound_clusters, inbound_listener, inbound_route_configs
from controlplane.translate.listeners import outbound_http_listener
from controlplane.translate.observability import telemetry_clusters
from controlplane.translate.passthrough import passthrough_cluster
from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, Origin, Resources
from controlplane.translate.routes import outbound_route_config
from controlplane.translate.secrets import credential_secrets
from controlplane.translate.tcp import tcp_listener


def translate_proxy(model: ProxyModel) -> Resources:
    """All Envoy resources for one proxy, keyed by type URL and name."""
    resources = Resources()
    telemetry_origins = _origins(model.telemetry.origins)
    for cluster in model.clusters:
        envoy_cluster = translate_cluster(cluster)
        origins = _origins(cluster.origins)
        resources.add(CLUSTER, envoy_cluster.name, envoy_cluster, origins)
        if cluster.discovery is Discovery.EDS:
            # STRICT_DNS clusters carry their endpoints inline; only EDS clusters need the resource.
            assignment = load_assignment(cluster)
            resources.add(ENDPOINT, assignment.cluster_name, assignment, origins)
    if model.outbound_http is not None:
        outbound = model.outbound_http
        if outbound.outbound_policy is OutboundPolicy.ALLOW_ANY:
            passthrough = passthrough_cluster(model.mesh_connect_timeout_ms)
            resources.add(CLUSTER, passthrough.name, passthrough, _origins(model.mesh_origins))
        listener = outbound_http_listener(outbound, model.telemetry)
        resources.add(LISTENER, listener.name, listener, telemetry_origins)
        route_config = outbound_route_config(outbound)
        origins = _origins(o for vhost in outbound.virtual_hosts for o in vhost.origins)
        resources.add(ROUTE, route_config.name, route_config, origins)
    for tcp in model.tcp_listeners:
        envoy_listener = tcp_listener(tcp)
        resources.add(LISTENER, envoy_listener.name, envoy_listener, _origins(tcp.origins))
    if model.inbound is not None:
        for inbound_cluster in inbound_clusters(model.inbound):
            resources.add(CLUSTER, inbound_cluster.name, inbound_cluster)
        in_listener = inbound_listener(model.inbound, model.telemetry)
        authz = model.inbound.authz
        peer_origins = _origins((*model.inbound.origins, *(authz.origins if authz is not None else ())))
        listener_origins = tuple(sorted({*telemetry_origins, *peer_origins}))
        resources.add(LISTENER, in_listener.name, in_listener, listener_origins)
        for in_routes in inbound_route_configs(model.inbound):
            resources.add(ROUTE, in_routes.name, in_routes, peer_origins)
    if model.gateway is not None:
        gateway_origins = _origins(o for listener in model.gateway.listeners for o in listener.origins)
        for type_url, name, message in gateway_resources(model.gateway, model.telemetry):
            resources.add(type_url, name, message, gateway_origins)
    for credential in model.client_credentials:
        for secret in credential_secrets(credential):
            resources.add(SECRET, secret.name, secret)
    for collector in telemetry_clusters(model.telemetry, model.mesh_connect_timeout_ms):
        resources.add(CLUSTER, collector.name, collector, telemetry_origins)
    _sort(resources)
    return resources


def _origins(refs: Iterable[PolicyRef]) -> tuple[Origin, ...]:
    return tuple(sorted({Origin(r.kind, r.namespace, r.name, r.file, r.line) for r in refs}))


def _sort(resources: Resources) -> None:
    # Clusters are already sorted by (host, port) — not the same as by name ("outbound|10|..." sorts
    # before "outbound|9|..."), and consumers iterate these dicts, so re-key them by name.
    for type_url, by_name in resources.by_type.items():
        resources.by_type[type_url] = dict(sorted(by_name.items()))
