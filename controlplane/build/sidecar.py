"""`build_proxy`: the build stage's entry point — PolicySet + proxy identity → ProxyModel.

Pure and deterministic: no I/O, no clock, output sorted by name, so equal inputs give equal models and the
snapshot layer can hash them. It trusts nothing about its input beyond the PolicySet's types: references
that do not resolve are skipped (validation has already reported them).

Roles:
- sidecar: every service's clusters, and one outbound HTTP listener at the proxy's `outbound_address`
  routing by authority (see `routing`);
- gateway: an empty model for now; Gateway resources arrive with the wider traffic API.
"""

from __future__ import annotations

from controlplane.api.policyset import PolicySet
from controlplane.build.model import OutboundHttp, ProxyModel
from controlplane.build.proxy import ProxyIdentity, Role
from controlplane.build.routing import build_virtual_hosts, mesh_routing
from controlplane.build.services import build_clusters, service_registry


def build_proxy(policy: PolicySet, proxy: ProxyIdentity) -> ProxyModel:
    """What `proxy` should be configured with under `policy`."""
    if proxy.role is Role.GATEWAY:
        return ProxyModel(role=Role.GATEWAY)
    return build_sidecar(policy, proxy)


def build_sidecar(policy: PolicySet, proxy: ProxyIdentity) -> ProxyModel:
    # Every service is visible to every sidecar: Istio's default without `exportTo` or a Sidecar resource.
    registry = service_registry(policy)
    virtual_hosts = build_virtual_hosts(registry, mesh_routing(policy))
    return ProxyModel(
        role=Role.SIDECAR,
        clusters=build_clusters(registry),
        outbound_http=OutboundHttp(proxy.outbound_address, virtual_hosts),
    )
