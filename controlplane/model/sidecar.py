"""`build_proxy`: the build stage's entry point — PolicySet + proxy identity → ProxyModel.

Pure and deterministic: no I/O, no clock, output sorted by name, so equal inputs give equal models and the
snapshot layer can hash them. It trusts nothing about its input beyond the PolicySet's types: references
that do not resolve are skipped (validation has already reported them).

Roles:
- sidecar: every service's clusters (with DestinationRule policy and subsets), one outbound HTTP listener
  at the proxy's `outbound_address` routing by authority (see `routing`), TCP/TLS listeners on service
  addresses (see `tcp`), and an inbound listener when the proxy names its app (see `inbound`);
- gateway: every cluster, plus listeners from the Gateway servers that select it (see `gateway`).
"""

from __future__ import annotations

from dataclasses import replace

from controlplane.api.meshconfig import DEFAULT_ROOT_NAMESPACE
from controlplane.api.policyset import PolicySet
from controlplane.api.sidecar import Sidecar, select_sidecar
from controlplane.model.clusters import build_clusters
from controlplane.model.destinationrules import destination_rules
from controlplane.model.exports import exported_policy
from controlplane.model.gateway import build_gateway
from controlplane.model.identity import ProxyIdentity, Role
from controlplane.model.inbound import build_inbound
from controlplane.model.mtls import client_credentials
from controlplane.model.proxy_model import (
    DEFAULT_CONNECT_TIMEOUT_MS,
    Discovery,
    OutboundHttp,
    OutboundPolicy,
    ProxyModel,
)
from controlplane.model.refs import policy_ref
from controlplane.model.routing import build_virtual_hosts
from controlplane.model.services import service_registry, visible_services
from controlplane.model.tcp import build_tcp_listeners
from controlplane.model.telemetry import build_telemetry


def build_proxy(policy: PolicySet, proxy: ProxyIdentity) -> ProxyModel:
    """What `proxy` should be configured with under `policy`."""
    policy = exported_policy(policy, proxy.namespace)  # exportTo: what this proxy's namespace sees
    model = build_gateway(policy, proxy) if proxy.role is Role.GATEWAY else build_sidecar(policy, proxy)
    # Telemetry is the same for every role (Istio applies it to sidecars and gateways alike), so it is
    # added here once rather than by each role's builder; so are the clusters' TLS credentials.
    served = {c.name for c in model.gateway.credentials} if model.gateway is not None else set()
    return replace(model, telemetry=build_telemetry(policy, proxy),
                   client_credentials=client_credentials(policy, model.clusters, served))


def build_sidecar(policy: PolicySet, proxy: ProxyIdentity) -> ProxyModel:
    mesh = policy.mesh_config()
    # Every service is visible to every sidecar unless a Sidecar resource narrows it (`egress.hosts`).
    root = mesh.spec.root_namespace if mesh is not None else DEFAULT_ROOT_NAMESPACE
    sidecar = select_sidecar(policy.of_kind(Sidecar), proxy.namespace, proxy.label_map, root)
    registry = visible_services(service_registry(policy), sidecar)
    rules = destination_rules(policy, registry, proxy)
    connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS
    outbound_policy = OutboundPolicy.ALLOW_ANY
    if mesh is not None:
        connect_timeout_ms = mesh.spec.connect_timeout or DEFAULT_CONNECT_TIMEOUT_MS
        outbound_policy = OutboundPolicy(mesh.spec.outbound_traffic_policy.mode)
    if sidecar is not None and sidecar.spec.outbound_traffic_policy is not None:
        outbound_policy = OutboundPolicy(sidecar.spec.outbound_traffic_policy.mode)
    virtual_hosts = build_virtual_hosts(policy, registry, rules, proxy)
    clusters = build_clusters(policy, registry, rules, connect_timeout_ms, proxy.locality)
    dynamic = any(c.discovery is Discovery.DYNAMIC_FORWARD_PROXY for c in clusters)
    return ProxyModel(
        role=Role.SIDECAR,
        clusters=clusters,
        outbound_http=OutboundHttp(proxy.outbound_address, virtual_hosts, outbound_policy, dynamic),
        tcp_listeners=build_tcp_listeners(policy, registry, proxy),
        inbound=build_inbound(policy, proxy),
        mesh_connect_timeout_ms=connect_timeout_ms,
        mesh_origins=(policy_ref(policy, mesh),) if mesh is not None else (),
    )
