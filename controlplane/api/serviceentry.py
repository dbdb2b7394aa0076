"""ServiceEntry (networking.istio.io): declares a service — its hosts, ports and endpoints.

Mirrors istio/api `networking/v1/service_entry.proto`. Supported today: `hosts`, `ports` (number, name,
protocol, targetPort), `location`, `resolution` STATIC or DNS, and inline `endpoints` (address, ports,
labels, weight). Everything else is rejected as "unsupported field" or "unsupported value" so that nobody
believes it is in effect. See https://istio.io/latest/docs/reference/config/networking/service-entry/.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, field_validator

from controlplane.api.meta import Host, IstioModel, PolicyObject, PortNumber, Problem, duplicates

# Istio's port protocols. Istio matches them case-insensitively, so we upper-case before checking.
Protocol = Literal[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "MYSQL", "REDIS", "TCP", "TLS", "UDP"
]
# Ports that get HTTP routing (virtual hosts). Istio auto-detects unset protocols; we treat them as HTTP.
HTTP_PROTOCOLS: frozenset[str | None] = frozenset({"HTTP", "HTTP2", "GRPC", None})
# Ports whose upstream connections must speak HTTP/2.
HTTP2_PROTOCOLS: frozenset[str | None] = frozenset({"HTTP2", "GRPC"})

Location = Literal["MESH_EXTERNAL", "MESH_INTERNAL"]
Resolution = Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"]
SUPPORTED_RESOLUTIONS: tuple[Resolution, ...] = ("STATIC", "DNS")


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class ServicePort(IstioModel):
    """One port of the service. `name` is required, as in Istio: endpoints refer to ports by name."""

    number: PortNumber
    name: str = Field(min_length=1)
    protocol: Annotated[Protocol, BeforeValidator(_upper)] | None = None
    target_port: PortNumber | None = None

    @property
    def is_http(self) -> bool:
        return self.protocol in HTTP_PROTOCOLS


class WorkloadEntry(IstioModel):
    """An endpoint of the service (istio/api WorkloadEntry, inline form)."""

    # An IP for STATIC resolution (checked in `ServiceEntry.check`), an IP or DNS name for DNS.
    address: Host
    # Port name → endpoint port; overrides the service port's targetPort for this endpoint.
    ports: dict[str, PortNumber] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    # Istio treats 0 as "unset" (weight 1).
    weight: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None


class ServiceEntrySpec(IstioModel):
    hosts: tuple[Host, ...] = Field(min_length=1)
    ports: tuple[ServicePort, ...] = Field(min_length=1)
    location: Location = "MESH_EXTERNAL"
    # Istio's default is NONE (passthrough to the original destination), which we do not implement; a
    # missing resolution is therefore reported rather than quietly replaced by something else.
    resolution: Resolution = Field(default="NONE", validate_default=True)
    endpoints: tuple[WorkloadEntry, ...] = ()

    @field_validator("resolution")
    @classmethod
    def _supported_resolution(cls, value: Resolution) -> Resolution:
        if value not in SUPPORTED_RESOLUTIONS:
            hint = " (Istio's default when unset)" if value == "NONE" else ""
            raise ValueError(f"unsupported value {value!r}{hint}; supported: STATIC, DNS")
        return value

    def port(self, number: int) -> ServicePort | None:
        return next((port for port in self.ports if port.number == number), None)


class ServiceEntry(PolicyObject):
    KIND: ClassVar[str] = "ServiceEntry"

    kind: Literal["ServiceEntry"]
    spec: ServiceEntrySpec

    def check(self) -> Iterator[Problem]:
        spec = self.spec
        for index in duplicates(list(spec.hosts)):
            yield Problem(("spec", "hosts", index), f"duplicate host {spec.hosts[index]!r}")
        for index in duplicates([port.number for port in spec.ports]):
            yield Problem(("spec", "ports", index, "number"), f"duplicate port {spec.ports[index].number}")
        for index in duplicates([port.name for port in spec.ports]):
            yield Problem(("spec", "ports", index, "name"), f"duplicate port name {spec.ports[index].name!r}")
        names = {port.name for port in spec.ports}
        for index, endpoint in enumerate(spec.endpoints):
            yield from _check_endpoint(index, endpoint, names, spec.resolution)


def _check_endpoint(
    index: int, endpoint: WorkloadEntry, names: set[str], resolution: str
) -> Iterator[Problem]:
    path = ("spec", "endpoints", index)
    for name in endpoint.ports:
        if name not in names:
            yield Problem((*path, "ports", name), f"no port named {name!r} in spec.ports")
    if resolution == "STATIC":
        # Envoy's EDS needs IP addresses; hostnames only work with DNS resolution.
        try:
            ipaddress.ip_address(endpoint.address)
        except ValueError:
            message = f"STATIC resolution needs an IP address, got {endpoint.address!r}"
            yield Problem((*path, "address"), message)
