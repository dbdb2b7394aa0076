"""Services: ServiceEntries as the mesh's service registry, with their endpoints and host resolution.

A service is one ServiceEntry host (as written). Its endpoints are the ServiceEntry's inline `endpoints`,
or — with `workloadSelector` — the WorkloadEntry objects of the ServiceEntry's namespace whose labels
match (Istio's rule), sorted by namespace/name. A STATIC service skips WorkloadEntries without an IP
address (validation reports them). Endpoint ports follow Istio's precedence: the endpoint's
`ports[<port name>]`, else the port's `targetPort`, else the port `number`.

The functions are defensive about input that cross-object validation would have pruned (a host declared
twice, a destination port the service lacks): they skip it rather than fail, because the build stage must
work on any PolicySet, including ones made in code.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from controlplane.api.common import labels_match
from controlplane.api.destination import Destination
from controlplane.api.hosts import HostIndex, service_key, shared_short_hosts
from controlplane.api.meta import PolicyObject
from controlplane.api.policyset import PolicySet
from controlplane.api.serviceentry import ServiceEntry, ServiceEntrySpec, ServicePort
from controlplane.api.sidecar import Sidecar
from controlplane.api.workloadentry import WorkloadEntrySpec
from controlplane.model.proxy_model import Endpoint, HostPort, PolicyRef


@dataclass(frozen=True)
class Service:
    """One host of a ServiceEntry with the ServiceEntry's ports and its resolved workloads."""

    host: str
    namespace: str
    spec: ServiceEntrySpec
    workloads: tuple[WorkloadEntrySpec, ...]
    origin: PolicyRef

    @property
    def ports(self) -> tuple[ServicePort, ...]:
        return self.spec.ports

    @property
    def http_ports(self) -> list[ServicePort]:
        return sorted((port for port in self.spec.ports if port.is_http), key=lambda port: port.number)

    def port(self, number: int) -> ServicePort | None:
        return self.spec.port(number)

    def endpoints(self, port: ServicePort) -> list[Endpoint]:
        return sorted(endpoint(workload, port) for workload in self.workloads)


@dataclass(frozen=True)
class Registry:
    """Host → service (sorted by host), and the index that resolves host references to those hosts."""

    services: Mapping[str, Service]
    index: HostIndex

    def resolve(self, host: str, namespace: str) -> Service | None:
        canonical = self.index.resolve(host, namespace)
        return self.services.get(canonical) if canonical is not None else None


def origin_of(policy: PolicySet, obj: PolicyObject) -> PolicyRef:
    source = policy.source(obj.key)
    return PolicyRef(
        obj.kind,
        obj.metadata.namespace,
        obj.metadata.name,
        source.file if source else "",
        source.line if source else 0,
    )


def service_registry(policy: PolicySet) -> Registry:
    """The first ServiceEntry (by namespace/name) declaring a host wins.

    Every namespace's ServiceEntries are visible to every proxy: `exportTo` is not supported, and Istio's
    default is export to all namespaces.
    """
    services: dict[str, Service] = {}
    entries = policy.service_entries()
    shared = shared_short_hosts((h, e.metadata.namespace) for e in entries for h in e.spec.hosts)
    for entry in entries:
        workloads = _workloads(policy, entry)
        for written in entry.spec.hosts:
            host = service_key(written, entry.metadata.namespace, shared)
            if host not in services:
                origin = origin_of(policy, entry)
                services[host] = Service(host, entry.metadata.namespace, entry.spec, workloads, origin)
    ordered = dict(sorted(services.items()))
    index = HostIndex((host, service.namespace) for host, service in ordered.items())
    return Registry(ordered, index)


def _workloads(policy: PolicySet, entry: ServiceEntry) -> tuple[WorkloadEntrySpec, ...]:
    selector = entry.spec.workload_selector
    if selector is None:
        return entry.spec.endpoints
    selected = [
        we.spec
        for we in policy.workload_entries()
        if we.metadata.namespace == entry.metadata.namespace and labels_match(selector.labels, we.spec.labels)
    ]
    if entry.spec.resolution == "STATIC":
        selected = [spec for spec in selected if _is_ip(spec.address)]
    return tuple(selected)


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def endpoint(entry: WorkloadEntrySpec, port: ServicePort) -> Endpoint:
    number = entry.ports.get(port.name) or port.target_port or port.number
    labels = tuple(sorted(entry.labels.items()))
    # Istio reads weight 0 as unset.
    return Endpoint(entry.address, number, entry.weight or None, labels, locality=entry.locality or "")


def resolve_port(
    registry: Registry, destination: Destination, namespace: str, request_port: int | None = None
) -> HostPort | None:
    """The service port a destination refers to; None when the host or port does not resolve.

    Without `port`, the destination is the service's only port; with several, an HTTP route's is the
    port the request came in on (`request_port`, Istio's rule) if the service has it; ambiguous otherwise.
    """
    service = registry.resolve(destination.host, namespace)
    if service is None:
        return None
    if destination.port is not None:
        port = service.port(destination.port.number)
    elif len(service.ports) == 1:
        port = service.ports[0]
    else:
        port = service.port(request_port) if request_port is not None else None
    if port is None:
        return None
    return HostPort(service.host, port.number)


def visible_services(registry: Registry, sidecar: Sidecar | None) -> Registry:
    """The services a proxy under `sidecar` can reach (its `egress.hosts`); all without one."""
    if sidecar is None or not sidecar.spec.egress:
        return registry
    services = {
        host: service
        for host, service in registry.services.items()
        if sidecar.visible(host, service.namespace)
    }
    return Registry(services, HostIndex((host, service.namespace) for host, service in services.items()))
