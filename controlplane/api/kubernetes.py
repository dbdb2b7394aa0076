"""Kubernetes manifests next to Istio's: a core/v1 Service is a service; other Kubernetes kinds are an Info.

Istio's samples ship Services, Deployments and ServiceAccounts in the same files as their Istio config.
Without Kubernetes:

- A `Service` (apiVersion v1) is a service host `<name>.<namespace>.svc.cluster.local` whose endpoints are
  the WorkloadEntries of its namespace that its `selector` matches: exactly how Istio treats VMs (a
  WorkloadEntry selected by a Service). It is read as a MESH_INTERNAL, STATIC ServiceEntry
  (`as_service_entry`). Port protocols follow Istio's protocol selection: `appProtocol`, else the port
  name's prefix (`http`, `http-web`, `grpc`, `tcp-db`, ...), else unset (auto-detected, i.e. HTTP here).
  `clusterIP` (an IP) is the service's virtual address, as Kubernetes' VIP is in Istio. Supported: `ports`
  (name, port, targetPort as a number, protocol TCP, appProtocol), `selector`, `type`, `clusterIP`.
- Deployments, ServiceAccounts and the other kinds in `IGNORED_KINDS` configure things that only exist with
  Kubernetes (pods, RBAC): an Info "ignored without Kubernetes", never an error, and nothing is applied.
"""

from __future__ import annotations

import functools
import ipaddress
import weakref
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from controlplane.api.common import WorkloadSelector
from controlplane.api.diagnostics import INFO
from controlplane.api.hosts import CLUSTER_DOMAIN
from controlplane.api.meta import IstioModel, ObjectMeta, PolicyObject, PortNumber, Problem, duplicates
from controlplane.api.serviceentry import ServiceEntry, ServiceEntrySpec, ServicePort

# Kinds that only mean something to Kubernetes itself (workloads, RBAC, storage, scheduling).
IGNORED_KINDS = (
    "ClusterRole", "ClusterRoleBinding", "ConfigMap", "CronJob", "DaemonSet", "Deployment", "Endpoints",
    "EndpointSlice", "HorizontalPodAutoscaler", "Ingress", "Job", "Namespace", "NetworkPolicy",
    "PersistentVolumeClaim", "Pod", "PodDisruptionBudget", "ReplicaSet", "Role", "RoleBinding", "Secret",
    "ServiceAccount", "StatefulSet",
)

# Istio's protocol names as port-name prefixes / appProtocol values (case-insensitive), see
# https://istio.io/latest/docs/ops/configuration/traffic-management/protocol-selection/.
_PROTOCOLS = {
    "http": "HTTP", "http2": "HTTP2", "https": "HTTPS", "grpc": "GRPC", "grpc-web": "GRPC-WEB",
    "mongo": "MONGO", "mysql": "MYSQL", "redis": "REDIS", "tcp": "TCP", "tls": "TLS", "udp": "UDP",
    "kubernetes.io/h2c": "HTTP2", "kubernetes.io/ws": "HTTP", "kubernetes.io/wss": "HTTPS",
}


class KubernetesMeta(ObjectMeta):
    """Kubernetes objects carry more metadata than Istio policy uses (uid, ownerReferences, ...)."""

    model_config = ConfigDict(extra="allow")


class ServicePortSpec(IstioModel):
    name: str | None = None
    port: PortNumber
    target_port: PortNumber | str | None = None
    protocol: Literal["TCP"] = "TCP"
    app_protocol: str | None = None

    def istio_protocol(self) -> str | None:
        if self.app_protocol is not None:
            return _PROTOCOLS.get(self.app_protocol.lower())
        if self.name is None:
            return None
        name = self.name.lower()
        return _PROTOCOLS.get(name) or _PROTOCOLS.get(name.split("-", 1)[0])


class KubernetesServiceSpec(IstioModel):
    ports: tuple[ServicePortSpec, ...] = Field(min_length=1)
    selector: dict[str, str] = Field(default_factory=dict)
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    cluster_ip: str | None = Field(default=None, alias="clusterIP")


class KubernetesService(PolicyObject):
    KIND: ClassVar[str] = "Service"

    api_version: Literal["v1"]  # type: ignore[assignment]
    kind: Literal["Service"]
    metadata: KubernetesMeta
    spec: KubernetesServiceSpec

    @property
    def host(self) -> str:
        return f"{self.metadata.name}.{self.metadata.namespace}.{CLUSTER_DOMAIN}"

    def check(self) -> Iterator[Problem]:
        ports = self.spec.ports
        for index, port in enumerate(ports):
            if isinstance(port.target_port, str):
                message = "unsupported value: a named targetPort needs the pods' container ports; use a port"
                yield Problem(("spec", "ports", index, "targetPort"), message)
            if port.name is None and len(ports) > 1:
                yield Problem(("spec", "ports", index, "name"), "required when a Service has several ports")
        for index in duplicates([port.port for port in ports]):
            yield Problem(("spec", "ports", index, "port"), f"duplicate port {ports[index].port}")
        if self.spec.cluster_ip not in (None, "", "None") and not _is_ip(self.spec.cluster_ip):
            message = f"expected an IP address or None, got {self.spec.cluster_ip!r}"
            yield Problem(("spec", "clusterIP"), message)
        if not self.spec.selector:
            # Istio: a Service without selector has endpoints only from Endpoints objects (Kubernetes').
            message = "a Service without selector has no endpoints here (no Kubernetes Endpoints objects)"
            yield Problem(("spec", "selector"), message, INFO)

    def as_service_entry(self) -> ServiceEntry:
        """The ServiceEntry Istio's registry makes of this Service (its key stays `Service/<ns>/<name>`),
        made once per Service instance: the policy store keeps an unchanged Service's instance across
        reloads, and the model stage lends per-service results by instance (model/carry.py), so an
        unchanged Service must give the same ServiceEntry instance on every validation."""
        key = id(self)
        found = _CONVERTED.get(key)
        if found is not None and found[0]() is self:
            return found[1]
        entry = self._service_entry()
        _CONVERTED[key] = (weakref.ref(self, functools.partial(_forget, key)), entry)
        return entry

    def _service_entry(self) -> ServiceEntry:
        ports = tuple(
            ServicePort(
                number=port.port,
                name=port.name or f"port-{port.port}",
                protocol=port.istio_protocol(),  # type: ignore[arg-type]
                target_port=port.target_port if isinstance(port.target_port, int) else None,
            )
            for port in self.spec.ports
        )
        vip = self.spec.cluster_ip
        spec = ServiceEntrySpec(
            hosts=(self.host,),
            ports=ports,
            location="MESH_INTERNAL",
            resolution="STATIC",
            workload_selector=WorkloadSelector(labels=self.spec.selector) if self.spec.selector else None,
            addresses=(vip,) if vip and _is_ip(vip) else (),
        )
        # model_construct: the kind stays "Service" so that diagnostics and sources name the real object.
        return ServiceEntry.model_construct(
            api_version=self.api_version, kind=self.kind, metadata=self.metadata, spec=spec
        )


# id(Service) -> (the Service, weakly; its ServiceEntry): the entry lives as long as its Service
_CONVERTED: dict[int, tuple[weakref.ref[KubernetesService], ServiceEntry]] = {}


def _forget(key: int, gone: weakref.ref[KubernetesService]) -> None:
    found = _CONVERTED.get(key)
    if found is not None and found[0] is gone:  # not a newer Service that reused the id
        del _CONVERTED[key]


class KubernetesObject(PolicyObject):
    """Any other Kubernetes kind: accepted as written, reported as ignored, never applied."""

    model_config = ConfigDict(extra="allow")

    api_version: str  # type: ignore[assignment]
    metadata: KubernetesMeta

    def check(self) -> Iterator[Problem]:
        yield Problem((), f"{self.kind} ignored without Kubernetes", INFO)


def _is_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
