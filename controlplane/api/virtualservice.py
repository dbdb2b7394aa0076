"""VirtualService (networking.istio.io): how requests for a host are routed.

Mirrors istio/api `networking/v1/virtual_service.proto`. Supported today: `hosts`, `gateways`, and `http[]`
with `name`, `match[].uri.prefix` (plus `match[].name`) and a single `route[].destination` {host, port}.
Everything else (`exact`/`regex`, headers, weights, retries, faults, `tcp`, `tls`, ...) is rejected as
"unsupported field" until it is implemented. See
https://istio.io/latest/docs/reference/config/networking/virtual-service/.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import Field

from controlplane.api.meta import Host, IstioModel, PolicyObject, PortNumber, Problem, duplicates

# The reserved gateway name meaning "all sidecars in the mesh".
MESH_GATEWAY = "mesh"


class StringMatch(IstioModel):
    """Istio's StringMatch is a oneof; only `prefix` exists so far, so it is required."""

    prefix: str


class HTTPMatchRequest(IstioModel):
    name: str | None = None
    uri: StringMatch | None = None


class PortSelector(IstioModel):
    number: PortNumber


class Destination(IstioModel):
    host: Host
    # Optional when the destination service has exactly one port (checked across objects).
    port: PortSelector | None = None


class HTTPRouteDestination(IstioModel):
    destination: Destination


class HTTPRoute(IstioModel):
    name: str | None = None
    # No match block means "match everything" (prefix "/").
    match: tuple[HTTPMatchRequest, ...] = ()
    route: tuple[HTTPRouteDestination, ...] = Field(min_length=1)


class VirtualServiceSpec(IstioModel):
    hosts: tuple[Host, ...] = Field(min_length=1)
    # Absent means "mesh" only (sidecars), as in Istio.
    gateways: tuple[str, ...] | None = None
    http: tuple[HTTPRoute, ...] = ()

    @property
    def applies_to_mesh(self) -> bool:
        """Whether sidecars use this VirtualService: `gateways` absent or naming the reserved `mesh`."""
        return self.gateways is None or MESH_GATEWAY in self.gateways


class VirtualService(PolicyObject):
    KIND: ClassVar[str] = "VirtualService"

    kind: Literal["VirtualService"]
    spec: VirtualServiceSpec

    def check(self) -> Iterator[Problem]:
        spec = self.spec
        for index in duplicates(list(spec.hosts)):
            yield Problem(("spec", "hosts", index), f"duplicate host {spec.hosts[index]!r}")
        for index, http in enumerate(spec.http):
            if len(http.route) > 1:
                # Weighted destinations come with traffic shifting; until then one destination per route.
                yield Problem(
                    ("spec", "http", index, "route", 1),
                    "unsupported value: only one destination per route is supported yet",
                )
