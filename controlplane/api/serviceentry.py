"""ServiceEntry (networking.istio.io): declares a service — its hosts, ports and endpoints.

Mirrors istio/api `networking/v1/service_entry.proto`. Supported: `hosts`, `addresses` (the virtual IPs a
sidecar's TCP/TLS listeners bind), `ports` (number, name, protocol, targetPort), `location`, `resolution`
STATIC or DNS, inline `endpoints` (address, ports, labels, weight) or `workloadSelector` (WorkloadEntry
objects of the same namespace). Everything else is rejected as "unsupported field" or "unsupported value"
so that nobody
believes it is in effect. See https://istio.io/latest/docs/reference/config/networking/service-entry/.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator

from controlplane.api.common import WorkloadSelector
from controlplane.api.meta import (
    ExportTarget,
    HostPattern,
    IstioModel,
    PolicyObject,
    PortNumber,
    Problem,
    duplicates,
)
from controlplane.api.workloadentry import WorkloadEntrySpec, endpoint_problems

# Istio's port protocols. Istio matches them case-insensitively, so we upper-case before checking.
Protocol = Literal[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "MYSQL", "REDIS", "TCP", "TLS", "UDP"
]
# Ports that get HTTP routing (virtual hosts). Istio auto-detects unset protocols; we treat them as HTTP.
HTTP_PROTOCOLS: frozenset[str | None] = frozenset({"HTTP", "HTTP2", "GRPC", None})
# Ports that get a TCP listener (tcp_proxy) on the service's addresses; TLS and HTTPS route by SNI.
TCP_PROTOCOLS: frozenset[str | None] = frozenset({"TCP", "TLS", "HTTPS", "MONGO", "MYSQL", "REDIS"})
SNI_PROTOCOLS: frozenset[str | None] = frozenset({"TLS", "HTTPS"})
# Ports whose upstream connections must speak HTTP/2.
HTTP2_PROTOCOLS: frozenset[str | None] = frozenset({"HTTP2", "GRPC"})

Location = Literal["MESH_EXTERNAL", "MESH_INTERNAL"]
Resolution = Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"]
SUPPORTED_RESOLUTIONS: tuple[Resolution, ...] = ("NONE", "STATIC", "DNS")


def _check_ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(
            f"expected an IP address, got {value!r} (CIDR ranges are not supported: apps connect to the "
            "range directly, and without traffic capture this sidecar never sees those connections)"
        ) from None
    return value


IPAddress = Annotated[str, AfterValidator(_check_ip)]


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

    @property
    def is_tcp(self) -> bool:
        return self.protocol in TCP_PROTOCOLS


class ServiceEntrySpec(IstioModel):
    # Wildcards (`*.example.com`) need resolution NONE, as in Istio (checked in `ServiceEntry.check`).
    hosts: tuple[HostPattern, ...] = Field(min_length=1)
    ports: tuple[ServicePort, ...] = Field(min_length=1)
    location: Location = "MESH_EXTERNAL"
    # Istio's default, NONE: connections go to the destination the app asked for (see build/clusters).
    resolution: Resolution = Field(default="NONE", validate_default=True)
    endpoints: tuple[WorkloadEntrySpec, ...] = ()
    workload_selector: WorkloadSelector | None = None
    # Virtual IPs (no CIDRs): TCP and TLS ports get a sidecar listener on each (docs/compatibility.md).
    addresses: tuple[IPAddress, ...] = ()
    # Which namespaces' proxies see the service (model/exports.py).
    export_to: tuple[ExportTarget, ...] = ()

    @field_validator("resolution")
    @classmethod
    def _supported_resolution(cls, value: Resolution) -> Resolution:
        if value not in SUPPORTED_RESOLUTIONS:
            hint = " (Istio's default when unset)" if value == "NONE" else ""
            raise ValueError(f"unsupported value {value!r}{hint}; supported: NONE, STATIC, DNS")
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
        for index in duplicates(list(spec.addresses)):
            yield Problem(("spec", "addresses", index), f"duplicate address {spec.addresses[index]!r}")
        if spec.endpoints and spec.workload_selector is not None:
            yield Problem(("spec", "workloadSelector"), "only one of endpoints, workloadSelector may be set")
        yield from _check_resolution(spec)
        names = {port.name for port in spec.ports}
        for index, endpoint in enumerate(spec.endpoints):
            yield from _check_endpoint(index, endpoint, names, spec.resolution)


def _check_endpoint(
    index: int, endpoint: WorkloadEntrySpec, names: set[str], resolution: str
) -> Iterator[Problem]:
    path = ("spec", "endpoints", index)
    yield from endpoint_problems(path, endpoint)
    for name in endpoint.ports:
        if name not in names:
            yield Problem((*path, "ports", name), f"no port named {name!r} in spec.ports")
    if resolution == "STATIC" and endpoint.address:
        # Envoy's EDS needs IP addresses; hostnames only work with DNS resolution.
        try:
            ipaddress.ip_address(endpoint.address)
        except ValueError:
            message = f"STATIC resolution needs an IP address, got {endpoint.address!r}"
            yield Problem((*path, "address"), message)


def _check_resolution(spec: ServiceEntrySpec) -> Iterator[Problem]:
    wildcards = [index for index, host in enumerate(spec.hosts) if host.startswith("*")]
    if spec.resolution != "NONE":
        for index in wildcards:
            # Istio, too: a wildcard has no name to resolve or endpoints to pick between.
            message = f"a wildcard host needs resolution NONE (got {spec.resolution})"
            yield Problem(("spec", "hosts", index), message)
        return
    if spec.endpoints or spec.workload_selector is not None:
        field = "endpoints" if spec.endpoints else "workloadSelector"
        yield Problem(("spec", field), "resolution NONE has no endpoints; use STATIC or DNS")
    if not wildcards:
        return
    for index, port in enumerate(spec.ports):
        if not port.is_http:
            # HTTP requests name their destination (the authority); a TCP/TLS connection to a wildcard
            # host is only known by its original destination address, which needs traffic capture.
            message = (
                f"unsupported value {port.protocol!r} with a wildcard host and resolution NONE: "
                "only HTTP ports are supported (TCP/TLS would need the connection's original destination, "
                "i.e. traffic capture)"
            )
            yield Problem(("spec", "ports", index, "protocol"), message)
