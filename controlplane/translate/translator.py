"""`translate_proxy`: the translate stage's entry point — ProxyModel → Envoy resources.

Pure: the same model always gives byte-identical resources (resources are added in sorted name order,
and every repeated field is built from the model's sorted tuples), so the snapshot layer can version
resources by hashing their serialized bytes.

Consistency the xDS layer relies on holds by construction: every EDS cluster gets a ClusterLoadAssignment
of the same name, and every RDS name a listener refers to gets a RouteConfiguration. Each resource made
from policy records the objects it came from (`Resources.add(..., origins=...)`).

A resource that cannot be made (a value out of an Envoy field's range that validation let through) raises
`TranslationFailure` naming the policy objects it came from, so the caller (controlplane/isolation.py)
can leave exactly that object out instead of losing the proxy's whole configuration.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator

from envoy.config.route.v3 import route_components_pb2 as rc

from controlplane.model.proxy_model import (
    Cluster,
    Discovery,
    OutboundHttp,
    OutboundPolicy,
    PolicyRef,
    ProxyModel,
    TcpListener,
    VirtualHost,
)
from controlplane.translate.clusters import translate_cluster
from controlplane.translate.endpoints import load_assignment
from controlplane.translate.gateway import gateway_resources
from controlplane.translate.inbound import inbound_clusters, inbound_listener, inbound_route_configs
from controlplane.translate.jwks import jwks_clusters
from controlplane.translate.listeners import outbound_http_listener
from controlplane.translate.observability import telemetry_clusters
from controlplane.translate.passthrough import passthrough_cluster
from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, Origin, Resources
from controlplane.translate.routes import outbound_route_config
from controlplane.translate.secrets import credential_secrets
from controlplane.translate.tcp import tcp_listener


class TranslationFailure(Exception):
    """A resource could not be made; `origins` are the policy objects it came from (the suspects)."""

    def __init__(self, what: str, origins: tuple[Origin, ...], cause: Exception) -> None:
        super().__init__(f"{what}: {type(cause).__name__}: {cause}")
        self.what, self.origins, self.cause = what, origins, cause


@contextlib.contextmanager
def _blame(what: str, origins: tuple[Origin, ...]) -> Iterator[None]:
    try:
        yield
    except TranslationFailure:
        raise
    except Exception as err:
        raise TranslationFailure(what, origins, err) from err


def translate_proxy(model: ProxyModel) -> Resources:
    """All Envoy resources for one proxy, keyed by type URL and name."""
    resources = Resources()
    add_clusters(resources, model.clusters)
    if model.outbound_http is not None:
        _outbound(resources, model, model.outbound_http, _origins(model.telemetry.origins))
        add_outbound_routes(resources, model.outbound_http)
    add_tcp_listeners(resources, model.tcp_listeners)
    add_own(resources, model)
    sort_resources(resources)
    return resources


# The parts of `translate_proxy`, in its order. The policy-wide ones (clusters with their endpoints,
# the outbound route table, the TCP listeners on service addresses) depend only on their model part,
# which proxies share (model/policywide.py), so xds/assembly.py translates each once per policy.

def add_clusters(resources: Resources, clusters: Iterable[Cluster]) -> None:
    """The outbound clusters and the ClusterLoadAssignments of the EDS ones."""
    for cluster in clusters:
        origins = _origins(cluster.origins)
        with _blame(f"cluster {cluster.ref}", origins):
            envoy_cluster = translate_cluster(cluster)
            resources.add(CLUSTER, envoy_cluster.name, envoy_cluster, origins)
            if cluster.discovery is Discovery.EDS:
                # STRICT_DNS clusters carry their endpoints inline; only EDS clusters need the resource.
                assignment = load_assignment(cluster)
                resources.add(ENDPOINT, assignment.cluster_name, assignment, origins)


def add_outbound_routes(resources: Resources, outbound: OutboundHttp,
                        translate: Callable[[VirtualHost], rc.VirtualHost] | None = None) -> None:
    """The outbound RouteConfiguration (every virtual host); does not depend on the listener's address.
    `translate`: how one virtual host is translated (translate/routes.py; a memo of it may be given)."""
    try:
        route_config = outbound_route_config(outbound, translate)
    except Exception as err:
        raise TranslationFailure("outbound routes", _failing_virtual_hosts(outbound), err) from err
    origins = _origins(o for vhost in outbound.virtual_hosts for o in vhost.origins)
    resources.add(ROUTE, route_config.name, route_config, origins)


def add_tcp_listeners(resources: Resources, listeners: Iterable[TcpListener]) -> None:
    for tcp in listeners:
        with _blame("tcp listener", _origins(tcp.origins)):
            envoy_listener = tcp_listener(tcp)
            resources.add(LISTENER, envoy_listener.name, envoy_listener, _origins(tcp.origins))


def add_own(resources: Resources, model: ProxyModel) -> None:
    """What is really per proxy: the listeners on its addresses, the inbound side, the gateway, its TLS
    credentials and telemetry collectors (the passthrough cluster and outbound listener: `add_outbound`)."""
    telemetry_origins = _origins(model.telemetry.origins)
    if model.inbound is not None:
        authz = model.inbound.authz
        peer_origins = _origins((*model.inbound.origins, *(authz.origins if authz is not None else ())))
        with _blame("inbound listener", tuple(sorted({*telemetry_origins, *peer_origins}))):
            for inbound_cluster in inbound_clusters(model.inbound):
                resources.add(CLUSTER, inbound_cluster.name, inbound_cluster)
            for jwks in jwks_clusters(authz, model.mesh_connect_timeout_ms):
                resources.add(CLUSTER, jwks.name, jwks, peer_origins)
            in_listener = inbound_listener(model.inbound, model.telemetry)
            listener_origins = tuple(sorted({*telemetry_origins, *peer_origins}))
            resources.add(LISTENER, in_listener.name, in_listener, listener_origins)
            for in_routes in inbound_route_configs(model.inbound):
                resources.add(ROUTE, in_routes.name, in_routes, peer_origins)
    if model.gateway is not None:
        gateway_origins = _origins(o for listener in model.gateway.listeners for o in listener.origins)
        suspects = tuple(sorted({*_origins(model.gateway.rate_limits.origins), *gateway_origins}))
        with _blame("gateway", suspects):
            for type_url, name, message in gateway_resources(model.gateway, model.telemetry):
                resources.add(type_url, name, message, gateway_origins)
            for jwks in jwks_clusters(model.gateway.authz, model.mesh_connect_timeout_ms):
                resources.add(CLUSTER, jwks.name, jwks, _origins(model.gateway.authz.origins
                                                                  if model.gateway.authz else ()))
    with _blame("tls credentials", ()):
        for credential in model.client_credentials:
            for secret in credential_secrets(credential):
                resources.add(SECRET, secret.name, secret)
    with _blame("telemetry", telemetry_origins):
        for collector in telemetry_clusters(model.telemetry, model.mesh_connect_timeout_ms):
            resources.add(CLUSTER, collector.name, collector, telemetry_origins)


def own_inputs(model: ProxyModel) -> tuple[object, ...]:
    """Everything `add_own` reads of the model (xds/assembly.py reuses its output while this is equal)."""
    return ("own", model.inbound, model.telemetry, model.gateway, model.client_credentials,
            model.mesh_connect_timeout_ms)


def add_outbound(resources: Resources, model: ProxyModel) -> None:
    """The passthrough cluster and the outbound HTTP listener (on the proxy's own address)."""
    if model.outbound_http is not None:
        _outbound(resources, model, model.outbound_http, _origins(model.telemetry.origins))


def _outbound(resources: Resources, model: ProxyModel, outbound: OutboundHttp,
              telemetry_origins: tuple[Origin, ...]) -> None:
    if outbound.outbound_policy is OutboundPolicy.ALLOW_ANY:
        with _blame("passthrough cluster", _origins(model.mesh_origins)):
            passthrough = passthrough_cluster(model.mesh_connect_timeout_ms)
            resources.add(CLUSTER, passthrough.name, passthrough, _origins(model.mesh_origins))
    with _blame("outbound listener", telemetry_origins):
        listener = outbound_http_listener(outbound, model.telemetry)
        resources.add(LISTENER, listener.name, listener, telemetry_origins)


def _failing_virtual_hosts(outbound: OutboundHttp) -> tuple[Origin, ...]:
    """The origins of the virtual hosts that fail on their own: one route table holds every service, so
    the suspects are narrowed to the failing services (only on the failure path)."""
    suspects: list[PolicyRef] = []
    for vhost in outbound.virtual_hosts:
        try:
            outbound_route_config(dataclasses.replace(outbound, virtual_hosts=(vhost,)))
        except Exception:
            suspects.extend(vhost.origins)
    return _origins(suspects or [o for vhost in outbound.virtual_hosts for o in vhost.origins])


def _origins(refs: Iterable[PolicyRef]) -> tuple[Origin, ...]:
    # deduplicated and sorted as plain tuples (Origin's order is its fields' order): comparing and hashing
    # the dataclasses runs their generated Python methods, thousands of times per shape
    keys = {(r.kind, r.namespace, r.name, r.file, r.line) for r in refs}
    return tuple(Origin(*key) for key in sorted(keys))


def sort_resources(resources: Resources) -> None:
    # Clusters are already sorted by (host, port) — not the same as by name ("outbound|10|..." sorts
    # before "outbound|9|..."), and consumers iterate these dicts, so re-key them by name.
    for type_url, by_name in resources.by_type.items():
        resources.by_type[type_url] = dict(sorted(by_name.items()))
