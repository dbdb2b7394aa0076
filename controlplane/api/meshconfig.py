"""MeshConfig: mesh-wide defaults, in our own envelope because Istio keeps MeshConfig in a ConfigMap.

    apiVersion: controlplane.io/v1alpha1
    kind: MeshConfig
    metadata: {name: mesh}
    spec:
      outboundTrafficPolicy: {mode: REGISTRY_ONLY}   # or ALLOW_ANY (Istio's default)
      connectTimeout: 5s                             # Istio's default 10s

`spec` uses Istio's MeshConfig field names (istio/api mesh/v1alpha1/config.proto); only the two fields above
are supported. One MeshConfig per mesh: when several are given the first by namespace/name applies and the
others are reported (api/validate.py).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from controlplane.api.common import PositiveDurationMs
from controlplane.api.meta import IstioModel, PolicyObject

OutboundMode = Literal["ALLOW_ANY", "REGISTRY_ONLY"]


class OutboundTrafficPolicy(IstioModel):
    mode: OutboundMode = "ALLOW_ANY"


class MeshConfigSpec(IstioModel):
    outbound_traffic_policy: OutboundTrafficPolicy = OutboundTrafficPolicy()
    connect_timeout: PositiveDurationMs | None = None


class MeshConfig(PolicyObject):
    KIND: ClassVar[str] = "MeshConfig"

    api_version: Literal["controlplane.io/v1alpha1"]  # type: ignore[assignment]
    kind: Literal["MeshConfig"]
    spec: MeshConfigSpec = MeshConfigSpec()
