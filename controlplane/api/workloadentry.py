"""WorkloadEntry and WorkloadGroup (networking.istio.io): workloads outside Kubernetes.

`WorkloadEntrySpec` is also the inline `ServiceEntry.endpoints[]` form. A WorkloadEntry object is an
endpoint of every ServiceEntry in its namespace whose `workloadSelector` its labels match (Istio's rule).

A WorkloadGroup's `probe` is run in Istio by the VM's agent; we have no agent (and no kubelet), so it
becomes Envoy active health checking on the clusters whose endpoints belong to the group: WorkloadEntries
of the group's namespace whose labels include the group's `metadata.labels` (see model/healthchecks.py).
Supported probe fields: httpGet (path, port, host, scheme HTTP, httpHeaders), tcpSocket (port),
timeoutSeconds, periodSeconds, successThreshold, failureThreshold. See
https://istio.io/latest/docs/reference/config/networking/workload-group/.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from controlplane.api.common import Locality
from controlplane.api.diagnostics import REQUIRED_FIELD, FieldPath
from controlplane.api.meta import Host, IstioModel, PolicyObject, PortNumber, Problem


class WorkloadEntrySpec(IstioModel):
    """An endpoint: address, per-port-name ports, labels (subsets select on them), weight."""

    # An IP for STATIC resolution (checked where the resolution is known), an IP or DNS name for DNS.
    # "" is unset: Istio requires `address` or `network` in a WorkloadEntry, and forbids `address` in a
    # WorkloadGroup template (see `missing_address`); unset in a ServiceEntry endpoint is an error too.
    address: Host = ""
    # Istio's multi-network endpoints are reached through the network's east-west gateway; we have none.
    network: str | None = None
    # `region/zone/subzone`: the endpoint's Envoy locality (locality load balancing, model/locality.py).
    locality: Locality | None = None
    # Port name → endpoint port; overrides the service port's targetPort for this endpoint.
    ports: dict[str, PortNumber] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    # Istio treats 0 as "unset" (weight 1).
    weight: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    # The workload's identity: its certificate is spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>,
    # and clients calling it verify that name (auto mTLS, model/mtls.py).
    service_account: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")] | None = None


def endpoint_problems(
    path: FieldPath, spec: WorkloadEntrySpec, template: bool = False
) -> Iterator[Problem]:
    """`address` / `network` as Istio's CRD rules have them (a template must not set `address`)."""
    if spec.network is not None:
        yield Problem(
            (*path, "network"),
            "unsupported field: multi-network endpoints need Istio's east-west gateways (we have none)",
        )
    if template:
        if spec.address:
            yield Problem((*path, "address"), "must not be set in a WorkloadGroup template")
    elif not spec.address and spec.network is None:
        yield Problem((*path, "address"), f"{REQUIRED_FIELD} (address or network)")


class WorkloadEntry(PolicyObject):
    KIND: ClassVar[str] = "WorkloadEntry"

    kind: Literal["WorkloadEntry"]
    spec: WorkloadEntrySpec

    def check(self) -> Iterator[Problem]:
        return endpoint_problems(("spec",), self.spec)


class HTTPHeader(IstioModel):
    name: str = Field(min_length=1)
    value: str


class HTTPGetAction(IstioModel):
    path: str = "/"
    port: PortNumber
    host: str | None = None
    scheme: Literal["HTTP", "http"] = "HTTP"
    http_headers: tuple[HTTPHeader, ...] = ()


class TCPSocketAction(IstioModel):
    port: PortNumber
    host: str | None = None


Seconds = Annotated[int, Field(ge=1, le=2**31 - 1)]


class ReadinessProbe(IstioModel):
    # Kubernetes' defaults, which Istio's agent follows.
    timeout_seconds: Seconds = 1
    period_seconds: Seconds = 10
    success_threshold: Seconds = 1
    failure_threshold: Seconds = 3
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None

    @model_validator(mode="after")
    def _one_action(self) -> ReadinessProbe:
        if (self.http_get is None) == (self.tcp_socket is None):
            raise ValueError("exactly one of httpGet, tcpSocket must be set")
        return self


class WorkloadGroupMetadata(IstioModel):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class WorkloadGroupSpec(IstioModel):
    metadata: WorkloadGroupMetadata = Field(default_factory=WorkloadGroupMetadata)
    template: WorkloadEntrySpec | None = None
    probe: ReadinessProbe | None = None


class WorkloadGroup(PolicyObject):
    KIND: ClassVar[str] = "WorkloadGroup"

    kind: Literal["WorkloadGroup"]
    spec: WorkloadGroupSpec

    def check(self) -> Iterator[Problem]:
        if self.spec.template is not None:
            yield from endpoint_problems(("spec", "template"), self.spec.template, template=True)
        if self.spec.probe is not None and not self.spec.metadata.labels:
            # Without labels the group would claim every workload of its namespace.
            yield Problem(("spec", "metadata", "labels"), "a group with a probe needs metadata.labels")

    @property
    def labels(self) -> dict[str, str]:
        return self.spec.metadata.labels
