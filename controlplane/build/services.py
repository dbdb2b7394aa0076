"""Services: ServiceEntries as the mesh's service registry, and the clusters a proxy gets from them.

A service is one ServiceEntry host; every port of it becomes one cluster (whatever its protocol: TCP ports
need clusters too, even though only HTTP ports get routes). Endpoint ports follow Istio's precedence:
the endpoint's `ports[<port name>]`, else the port's `targetPort`, else the port `number`.

The functions are defensive about input that cross-object validation would have pruned (a host declared
twice, a destination port the service lacks): they skip it rather than fail, because the build stage must
work on any PolicySet, including ones made in code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controlplane.api.policyset import PolicySet
from controlplane.api.serviceentry import HTTP2_PROTOCOLS, ServiceEntrySpec, ServicePort, WorkloadEntry
from controlplane.api.virtualservice import Destination
from controlplane.build.model import (
    Cluster,
    ClusterRef,
    Discovery,
    Endpoint,
    HostPort,
    UpstreamProtocol,
)


@dataclass(frozen=True)
class Service:
    """One host of a ServiceEntry with the ServiceEntry's ports and endpoints."""

    host: str
    spec: ServiceEntrySpec

    @property
    def ports(self) -> tuple[ServicePort, ...]:
        return self.spec.ports

    @property
    def http_ports(self) -> list[ServicePort]:
        return sorted((port for port in self.spec.ports if port.is_http), key=lambda port: port.number)

    def port(self, number: int) -> ServicePort | None:
        return self.spec.port(number)


def service_registry(policy: PolicySet) -> dict[str, Service]:
    """Host → service, sorted by host. The first ServiceEntry (by namespace/name) declaring a host wins.

    Every namespace's ServiceEntries are visible to every proxy: `exportTo` is not supported yet, and Istio's
    default is export to all namespaces.
    """
    registry: dict[str, Service] = {}
    for entry in policy.service_entries():
        for host in entry.spec.hosts:
            registry.setdefault(host, Service(host, entry.spec))
    return dict(sorted(registry.items()))


def build_clusters(registry: Mapping[str, Service]) -> tuple[Cluster, ...]:
    """One cluster per service port, sorted by (host, port)."""
    clusters = [_cluster(service, port) for service in registry.values() for port in service.ports]
    return tuple(sorted(clusters, key=lambda cluster: cluster.ref))


def _cluster(service: Service, port: ServicePort) -> Cluster:
    ref = ClusterRef(HostPort(service.host, port.number))
    protocol = UpstreamProtocol.HTTP2 if port.protocol in HTTP2_PROTOCOLS else UpstreamProtocol.HTTP1
    endpoints = sorted(_endpoint(entry, port) for entry in service.spec.endpoints)
    if service.spec.resolution == "DNS":
        if not endpoints:
            # A DNS ServiceEntry without endpoints means "resolve the host itself" (Istio SE conversion).
            endpoints = [Endpoint(service.host, port.target_port or port.number)]
        return Cluster(ref, Discovery.STRICT_DNS, tuple(endpoints), protocol)
    return Cluster(ref, Discovery.EDS, tuple(endpoints), protocol)


def _endpoint(entry: WorkloadEntry, port: ServicePort) -> Endpoint:
    number = entry.ports.get(port.name) or port.target_port or port.number
    labels = tuple(sorted(entry.labels.items()))
    # Istio reads weight 0 as unset.
    return Endpoint(entry.address, number, entry.weight or None, labels)


def resolve_destination(registry: Mapping[str, Service], destination: Destination) -> ClusterRef | None:
    """The cluster a VirtualService destination refers to; None when the host or port does not resolve.

    Without `port`, the destination is the service's only port (Istio's rule); ambiguous otherwise.
    """
    service = registry.get(destination.host)
    if service is None:
        return None
    if destination.port is not None:
        port = service.port(destination.port.number)
    else:
        port = service.ports[0] if len(service.ports) == 1 else None
    if port is None:
        return None
    return ClusterRef(HostPort(service.host, port.number))
