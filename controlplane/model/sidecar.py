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

from dataclasses import dataclass, replace

from controlplane.api.meshconfig import DEFAULT_ROOT_NAMESPACE
from controlplane.api.policyset import PolicySet
from controlplane.api.sidecar import Sidecar, select_sidecar
from controlplane.model.clusters import build_clusters
from controlplane.model.destinationrules import destination_rules
from controlplane.model.exports import exported_policy
from controlplane.model.gateway import build_gateway
from controlplane.model.gatewaymodel import TlsCredential
from controlplane.model.identity import ProxyIdentity, Role
from controlplane.model.inbound import build_inbound
from controlplane.model.mtls import client_credentials
from controlplane.model.proxy_model import (
    DEFAULT_CONNECT_TIMEOUT_MS,
    Cluster,
    Discovery,
    OutboundHttp,
    OutboundPolicy,
    ProxyModel,
    TcpListener,
    VirtualHost,
)
from controlplane.model.refs import PolicyRef, policy_ref
from controlplane.model.routing import build_virtual_hosts
from controlplane.model.services import service_registry, visible_services
from controlplane.model.tcp import build_tcp_listeners
from controlplane.model.telemetry import ProxyTelemetry, build_telemetry


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
    mesh = MeshDefaults.of(policy)
    # Every service is visible to every sidecar unless a Sidecar resource narrows it (`egress.hosts`).
    sidecar = select_sidecar(policy.of_kind(Sidecar), proxy.namespace, proxy.label_map, mesh.root_namespace)
    registry = visible_services(service_registry(policy), sidecar)
    rules = destination_rules(policy, registry, proxy)
    clusters = build_clusters(policy, registry, rules, mesh.connect_timeout_ms, proxy.locality)
    return sidecar_model(
        policy, proxy, mesh, sidecar,
        clusters=clusters,
        virtual_hosts=build_virtual_hosts(policy, registry, rules, proxy),
        tcp_listeners=build_tcp_listeners(policy, registry, proxy),
        forwards_by_authority=forwards_by_authority(clusters),
    )


@dataclass(frozen=True)
class MeshDefaults:
    """What the MeshConfig sets for every sidecar (or the defaults without one)."""

    root_namespace: str = DEFAULT_ROOT_NAMESPACE
    connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS
    outbound_policy: OutboundPolicy = OutboundPolicy.ALLOW_ANY
    origins: tuple[PolicyRef, ...] = ()

    @classmethod
    def of(cls, policy: PolicySet) -> MeshDefaults:
        mesh = policy.mesh_config()
        if mesh is None:
            return cls()
        return cls(mesh.spec.root_namespace,
                   mesh.spec.connect_timeout or DEFAULT_CONNECT_TIMEOUT_MS,
                   OutboundPolicy(mesh.spec.outbound_traffic_policy.mode),
                   (policy_ref(policy, mesh),))

    def outbound_policy_for(self, sidecar: Sidecar | None) -> OutboundPolicy:
        """A Sidecar resource's outboundTrafficPolicy overrides the mesh's."""
        if sidecar is not None and sidecar.spec.outbound_traffic_policy is not None:
            return OutboundPolicy(sidecar.spec.outbound_traffic_policy.mode)
        return self.outbound_policy


def forwards_by_authority(clusters: tuple[Cluster, ...]) -> bool:
    """Some cluster resolves request authorities (resolution NONE): the listener needs the DFP filter."""
    return any(c.discovery is Discovery.DYNAMIC_FORWARD_PROXY for c in clusters)


def sidecar_model(
    policy: PolicySet,
    proxy: ProxyIdentity,
    mesh: MeshDefaults,
    sidecar: Sidecar | None,
    *,
    clusters: tuple[Cluster, ...],
    virtual_hosts: tuple[VirtualHost, ...],
    tcp_listeners: tuple[TcpListener, ...],
    forwards_by_authority: bool,
    telemetry: ProxyTelemetry | None = None,
    client_credentials: tuple[TlsCredential, ...] = (),
) -> ProxyModel:
    """A sidecar's model from its parts: the one assembly of the reference (`build_sidecar`) and of the
    memoized policy-wide path (model/policywide.py), which computes the same parts once per policy."""
    return ProxyModel(
        role=Role.SIDECAR,
        clusters=clusters,
        outbound_http=OutboundHttp(proxy.outbound_address, virtual_hosts, mesh.outbound_policy_for(sidecar),
                                   forwards_by_authority),
        tcp_listeners=tcp_listeners,
        inbound=build_inbound(policy, proxy),  # the proxy's own address and app ports
        mesh_connect_timeout_ms=mesh.connect_timeout_ms,
        mesh_origins=mesh.origins,
        telemetry=telemetry if telemetry is not None else ProxyTelemetry(),
        client_credentials=client_credentials,
    )
