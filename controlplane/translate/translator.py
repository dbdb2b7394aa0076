"""`translate_proxy`: the translate stage's entry point — ProxyModel → Envoy resources.

Pure: the same model always gives byte-identical resources (resources are added in sorted name order,
and every repeated field is built from the model's sorted tuples), so the snapshot layer can version
resources by hashing their serialized bytes.

Consistency the xDS layer relies on holds by construction: every EDS cluster gets a ClusterLoadAssignment
of the same name, and every RDS name a listener refers to gets a RouteConfiguration.
"""

from __future__ import annotations

from controlplane.build.model import Discovery, ProxyModel
from controlplane.translate.clusters import translate_cluster
from controlplane.translate.endpoints import load_assignment
from controlplane.translate.listeners import outbound_http_listener
from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, Resources
from controlplane.translate.routes import outbound_route_config


def translate_proxy(model: ProxyModel) -> Resources:
    """All Envoy resources for one proxy, keyed by type URL and name."""
    resources = Resources()
    for cluster in model.clusters:
        envoy_cluster = translate_cluster(cluster)
        resources.add(CLUSTER, envoy_cluster.name, envoy_cluster)
        if cluster.discovery is Discovery.EDS:
            # STRICT_DNS clusters carry their endpoints inline; only EDS clusters need the resource.
            assignment = load_assignment(cluster)
            resources.add(ENDPOINT, assignment.cluster_name, assignment)
    if model.outbound_http is not None:
        listener = outbound_http_listener(model.outbound_http)
        resources.add(LISTENER, listener.name, listener)
        route_config = outbound_route_config(model.outbound_http)
        resources.add(ROUTE, route_config.name, route_config)
    _sort(resources)
    return resources


def _sort(resources: Resources) -> None:
    # Clusters are already sorted by (host, port) — not the same as by name ("outbound|10|..." sorts
    # before "outbound|9|..."), and consumers iterate these dicts, so re-key them by name.
    for type_url, by_name in resources.by_type.items():
        resources.by_type[type_url] = dict(sorted(by_name.items()))
