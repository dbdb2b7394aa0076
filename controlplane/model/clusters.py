"""Clusters: one per service port, plus one per (port, DestinationRule subset), with their policies.

Subset clusters (`outbound|<port>|<subset>|<host>`) carry the service's endpoints whose labels match the
subset's labels, and the subset's policy merged over the rule's (see `destinationrules`). Every service
port gets a cluster whatever its protocol: TCP ports need clusters too.

Connect timeout: DestinationRule `connectionPool.tcp.connectTimeout`, else MeshConfig `connectTimeout`,
else Istio's 10s.

Active health checks come from WorkloadGroup probes (see `healthchecks`); TLS toward the endpoints from
DestinationRule `tls` or auto mTLS (see `mtls`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from controlplane.api.common import labels_match
from controlplane.api.policyset import PolicySet
from controlplane.api.serviceentry import HTTP2_PROTOCOLS, ServicePort
from controlplane.model.destinationrules import HostRules, cluster_policy
from controlplane.model.healthchecks import probe_for
from controlplane.model.locality import apply_locality
from controlplane.model.mtls import EndpointTls, client_tls_setting, upstream_tls
from controlplane.model.proxy_model import (
    Cluster,
    ClusterRef,
    Discovery,
    Endpoint,
    HostPort,
    UpstreamProtocol,
)
from controlplane.model.refs import sorted_refs
from controlplane.model.services import Registry, Service

# (service, its host rules, make) -> the service's clusters: `make()`, or equal ones made before
ServiceClusters = Callable[[Service, HostRules | None, Callable[[], Sequence[Cluster]]], Sequence[Cluster]]


def build_clusters(
    policy: PolicySet,
    registry: Registry,
    rules: Mapping[str, HostRules],
    connect_timeout_ms: int,
    locality: str = "",
    lend: ServiceClusters | None = None,
) -> tuple[Cluster, ...]:
    """Every cluster, sorted by (host, port, subset). `lend(service, its rules, make)`: a service's
    clusters, `make()` or equal ones made before from the same inputs (model/carry.py)."""
    clusters: list[Cluster] = []
    tls = EndpointTls(policy)
    for service in registry.services.values():
        host_rules = rules.get(service.host)

        def make(service: Service = service, host_rules: HostRules | None = host_rules) -> list[Cluster]:
            return service_clusters(policy, tls, service, host_rules, connect_timeout_ms, locality)

        clusters.extend(make() if lend is None else lend(service, host_rules, make))
    return tuple(sorted(clusters, key=lambda cluster: cluster.ref))


def service_clusters(
    policy: PolicySet,
    tls: EndpointTls,
    service: Service,
    host_rules: HostRules | None,
    connect_timeout_ms: int,
    locality: str,
) -> list[Cluster]:
    """One service's clusters: per port, the port's and then each subset's (by name)."""
    clusters: list[Cluster] = []
    subsets = sorted(host_rules.subsets.items()) if host_rules else []
    for port in service.ports:
        clusters.append(
            _cluster(policy, tls, service, port, host_rules, "", connect_timeout_ms, None, locality)
        )
        for name, subset in subsets:
            clusters.append(
                _cluster(
                    policy, tls, service, port, host_rules, name, connect_timeout_ms, subset.labels,
                    locality,
                )
            )
    return clusters


def _cluster(
    policy: PolicySet,
    tls: EndpointTls,
    service: Service,
    port: ServicePort,
    rules: HostRules | None,
    subset: str,
    connect_timeout_ms: int,
    subset_labels: dict[str, str] | None,
    proxy_locality: str,
) -> Cluster:
    ref = ClusterRef(HostPort(service.host, port.number), subset)
    if port.is_tcp:
        protocol = UpstreamProtocol.TCP
    elif port.protocol in HTTP2_PROTOCOLS:
        protocol = UpstreamProtocol.HTTP2
    else:
        protocol = UpstreamProtocol.HTTP1
    endpoints = service.endpoints(port)
    if subset_labels is not None:
        endpoints = [e for e in endpoints if labels_match(subset_labels, dict(e.labels))]
    health_check, probe_port, group_labels = probe_for(policy, service)
    if probe_port is not None and group_labels is not None:
        endpoints = [
            _with_probe_port(e, probe_port) if labels_match(group_labels, dict(e.labels)) else e
            for e in endpoints
        ]
    endpoints = [
        replace(e, tls_mode=True) if tls.accepts_mtls(service.namespace, dict(e.labels), port.number) else e
        for e in endpoints
    ]
    discovery = Discovery.EDS
    if service.spec.resolution == "NONE":
        # Istio passes NONE connections to their original destination. Our apps name the destination
        # rather than dial it, so the destination is that name's address on the port: the host itself,
        # resolved by DNS; for a wildcard host, each HTTP request's authority (dynamic forward proxy;
        # api/serviceentry.py rejects wildcards on other ports).
        if service.host.startswith("*"):
            discovery, endpoints = Discovery.DYNAMIC_FORWARD_PROXY, []
        else:
            discovery, endpoints = Discovery.STRICT_DNS, [Endpoint(service.host, port.number)]
    elif service.spec.resolution == "DNS":
        discovery = Discovery.STRICT_DNS
        if not service.workloads:
            # A DNS ServiceEntry without endpoints means "resolve the host itself" (Istio SE conversion).
            endpoints = [Endpoint(service.host, port.target_port or port.number)]
    cluster_policy_ = cluster_policy(rules, port.number, subset)
    if protocol is UpstreamProtocol.HTTP1 and cluster_policy_.connection_pool.h2_upgrade:
        protocol = UpstreamProtocol.HTTP2
    endpoints, weighted = apply_locality(
        list(endpoints),
        proxy_locality,
        cluster_policy_.load_balancer.locality,
        failover=cluster_policy_.outlier_detection is not None,
    )
    origins = (service.origin, *(rules.origins if rules else ()))
    setting = client_tls_setting(rules, port.number, subset)
    name = setting.credential_name if setting is not None else None
    credential = policy.credentials.get(name) if name else None
    upstream = upstream_tls(
        setting,
        host=service.host,
        port=port.number,
        subset=subset,
        identities=tls.identities(service.namespace, service.workloads),
        any_sidecar=any(e.tls_mode for e in endpoints),
        # A missing credential (a Warning) keeps its SDS CA secret, which is never served: the cluster's
        # connections fail, as Istio's do, instead of trusting the system CAs.
        credential_has_ca=(setting.ca_certificates is not None if setting is not None and setting.files
                           else credential is None or credential.ca_cert is not None),
        http2=protocol is UpstreamProtocol.HTTP2,
    )
    return Cluster(
        ref,
        discovery,
        tuple(endpoints),
        protocol,
        policy=cluster_policy_,
        connect_timeout_ms=cluster_policy_.connection_pool.connect_timeout_ms or connect_timeout_ms,
        health_check=health_check,
        origins=sorted_refs(origins),
        tls=upstream,
        locality_weighted=weighted,
    )


def _with_probe_port(endpoint: Endpoint, port: int) -> Endpoint:
    if endpoint.port == port:
        return endpoint
    return replace(endpoint, health_check_port=port)
