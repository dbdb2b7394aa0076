"""Destinations shared by VirtualService `http`, `tcp` and `tls` routes (istio/api Destination,
HTTPRouteDestination, RouteDestination)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from controlplane.api.common import PortSelector
from controlplane.api.meta import Host, IstioModel

# Istio's weights are int32 percentages in practice; Envoy accepts any uint32 total.
Weight = Annotated[int, Field(ge=0, le=2**31 - 1)]


class Destination(IstioModel):
    host: Host
    # A DestinationRule subset of the host (checked across objects).
    subset: str | None = Field(default=None, min_length=1)
    # Optional when the destination service has exactly one port (checked across objects).
    port: PortSelector | None = None


class HTTPRouteDestination(IstioModel):
    destination: Destination
    # None: Istio's rule — a single destination gets 100, several must all carry weights.
    weight: Weight | None = None


class RouteDestination(IstioModel):
    """A `tcp[]` / `tls[]` destination (no per-destination headers for L4)."""

    destination: Destination
    weight: Weight | None = None
