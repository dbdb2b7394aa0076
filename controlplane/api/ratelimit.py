"""RateLimitPolicy (controlplane.io/v1alpha1): request limits on gateway proxies — our own kind, because
Istio only offers rate limiting through EnvoyFilter patches.

    apiVersion: controlplane.io/v1alpha1
    kind: RateLimitPolicy
    metadata: {name: ingress, namespace: istio-system}
    spec:
      selector: {istio: ingressgateway}          # gateway proxies, by their node metadata labels
      gateway: {requestsPerUnit: 1000, unit: MINUTE}   # every request the gateway handles
      clientIp: {requestsPerUnit: 100, unit: MINUTE}   # each client address separately
      destinations:                                    # requests routed to a service (any route)
      - host: maximus-core-service
        limit: {requestsPerUnit: 500, unit: MINUTE}
      routes:                                          # one VirtualService http[] entry, by name
      - virtualService: istio-system/api               # [namespace/]name; short = this policy's namespace
        route: predict
        limit: {requestsPerUnit: 100, unit: MINUTE}

Every limit is a token bucket of `requestsPerUnit` tokens refilled each `unit`, enforced by Envoy's local
rate limit filter (one bucket per Envoy process and gateway listener); a request over any applicable limit
gets 429 with `x-ratelimit-*` headers. Several policies selecting one gateway are merged: for each scope
(gateway, clientIp, each destination, each route) the first policy by namespace/name that sets it wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import Field

from controlplane.api.common import PositiveUInt32
from controlplane.api.meta import Host, IstioModel, PolicyObject, Problem, duplicates

Unit = Literal["SECOND", "MINUTE", "HOUR"]
UNIT_MS: dict[str, int] = {"SECOND": 1000, "MINUTE": 60_000, "HOUR": 3_600_000}


class Limit(IstioModel):
    requests_per_unit: PositiveUInt32  # Envoy's token bucket max_tokens
    unit: Unit

    @property
    def interval_ms(self) -> int:
        return UNIT_MS[self.unit]


class DestinationLimit(IstioModel):
    host: Host
    limit: Limit


class RouteLimit(IstioModel):
    virtual_service: str = Field(min_length=1)
    route: str = Field(min_length=1)
    limit: Limit

    def vs_ref(self, namespace: str) -> str:
        """`namespace/name` of the VirtualService (a short name is in the policy's namespace)."""
        return self.virtual_service if "/" in self.virtual_service else f"{namespace}/{self.virtual_service}"


class RateLimitPolicySpec(IstioModel):
    selector: dict[str, str] = Field(min_length=1)
    gateway: Limit | None = None
    client_ip: Limit | None = None
    destinations: tuple[DestinationLimit, ...] = ()
    routes: tuple[RouteLimit, ...] = ()


class RateLimitPolicy(PolicyObject):
    KIND: ClassVar[str] = "RateLimitPolicy"

    api_version: Literal["controlplane.io/v1alpha1"]  # type: ignore[assignment]
    kind: Literal["RateLimitPolicy"]
    spec: RateLimitPolicySpec

    def check(self) -> Iterator[Problem]:
        spec = self.spec
        if spec.gateway is None and spec.client_ip is None and not spec.destinations and not spec.routes:
            yield Problem(("spec",), "set at least one of gateway, clientIp, destinations, routes")
        hosts = [d.host for d in spec.destinations]
        for index in duplicates(list(hosts)):
            yield Problem(("spec", "destinations", index, "host"), f"duplicate host {hosts[index]!r}")
        routes = [(r.vs_ref(self.metadata.namespace), r.route) for r in spec.routes]
        for index in duplicates(list(routes)):
            yield Problem(("spec", "routes", index, "route"), f"duplicate route {routes[index][1]!r}")
