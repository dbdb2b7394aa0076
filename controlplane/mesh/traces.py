"""Where the local mesh's traces go, said plainly when `make run` starts (issue 15: traces must not vanish
silently).

The local mesh runs no stand-in tracing backend: the Envoys send spans to the collectors the policy names
(MeshConfig `extensionProviders`, used by Telemetry `tracing`). For each one this says where that is and
whether anything can receive there now: a name this machine cannot resolve (config/'s `otel-collector`
is a container of the docker compose stack) or an address nothing listens on means Envoy drops the
spans, and the line says how to start a collector.
"""

from __future__ import annotations

import ipaddress
import socket

from controlplane.api.meshconfig import MeshConfig
from controlplane.api.policyset import PolicySet
from controlplane.api.telemetry import Telemetry
from controlplane.mesh.processes import port_in_use

HOW = ("start a collector there, e.g. `docker run -p 4317:4317 -p 9411:9411 -p 16686:16686 "
       "jaegertracing/all-in-one` (UI on :16686)")


def _state(host: str, port: int) -> str:
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)}
    except OSError:
        return (f"{host!r} does not resolve on this machine, so Envoy drops these spans; point the "
                f"provider's service at 127.0.0.1 (config/mesh.yaml) and {HOW}")
    loopback = [a for a in addresses if ipaddress.ip_address(a).is_loopback]
    if loopback and not any(port_in_use(a, port) for a in loopback if ":" not in a):
        return f"nothing listens there yet: spans are dropped until something does; {HOW}"
    return "a collector is listening"


def where_traces_go(policy: PolicySet) -> list[str]:
    """One line per tracing provider the policy uses (none: tracing is off)."""
    meshes = policy.of_kind(MeshConfig)
    if not meshes or not meshes[0].spec.enable_tracing:
        return ["tracing is off (MeshConfig enableTracing, or no MeshConfig)"]
    spec = meshes[0].spec
    used = set(spec.default_providers.tracing)
    for telemetry in policy.of_kind(Telemetry):
        used |= {ref.name for tracing in telemetry.spec.tracing for ref in tracing.providers}
    lines = []
    for provider in spec.extension_providers:
        collector, kind = provider.opentelemetry, "OpenTelemetry (OTLP/gRPC)"
        if collector is None:
            collector, kind = provider.zipkin, "Zipkin"
        if collector is None or provider.name not in used:
            continue
        default = " (default)" if provider.name in spec.default_providers.tracing else ""
        state = _state(collector.service, collector.port)
        lines.append(f"{provider.name}{default}: {kind} to {collector.service}:{collector.port} — {state}")
    return lines or ["no Telemetry or default provider traces anything"]
