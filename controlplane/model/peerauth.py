"""PeerAuthentication resolution: the mTLS mode a workload's inbound side has, per port, as Istio decides it.

Precedence (istio/api security/v1/peer_authentication.proto): the workload-level policy (a selector whose
labels the workload has, first by name in the workload's namespace) with its `portLevelMtls` entry for the
port, then its `mtls`; then the namespace-level policy (no selector); then the mesh-wide one (no selector,
root namespace). UNSET at one level inherits from the next; nothing set at all means PERMISSIVE, Istio's
default.
"""

from __future__ import annotations

from enum import StrEnum

from controlplane.api.common import labels_match
from controlplane.api.meshconfig import DEFAULT_ROOT_NAMESPACE
from controlplane.api.peerauthentication import PeerAuthentication
from controlplane.api.policyset import PolicySet
from controlplane.model.refs import PolicyRef, policy_ref


class MtlsMode(StrEnum):
    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"

    @property
    def accepts_mtls(self) -> bool:
        return self is not MtlsMode.DISABLE

    @property
    def accepts_plaintext(self) -> bool:
        return self is not MtlsMode.STRICT


def _root_namespace(policy: PolicySet) -> str:
    mesh = policy.mesh_config()
    return mesh.spec.root_namespace if mesh is not None else DEFAULT_ROOT_NAMESPACE


def applicable(policy: PolicySet, namespace: str, labels: dict[str, str]) -> list[PeerAuthentication]:
    """The policies that apply to a workload, most specific first (workload, namespace, mesh)."""
    all_policies = policy.of_kind(PeerAuthentication)
    chain: list[PeerAuthentication] = []
    for pa in all_policies:
        selector = pa.spec.selector
        if pa.metadata.namespace == namespace and selector is not None and labels_match(
            selector.match_labels, labels
        ):
            chain.append(pa)
            break
    for scope in dict.fromkeys((namespace, _root_namespace(policy))):
        chain.extend(p for p in all_policies if p.metadata.namespace == scope and p.spec.selector is None)
    return chain


def mtls_mode(chain: list[PeerAuthentication], port: int | None = None) -> MtlsMode:
    for pa in chain:
        if port is not None and port in pa.spec.port_level_mtls:
            mode = pa.spec.port_level_mtls[port].mode
            if mode != "UNSET":
                return MtlsMode(mode)
        if pa.mode != "UNSET":
            return MtlsMode(pa.mode)
    return MtlsMode.PERMISSIVE


def workload_modes(
    policy: PolicySet, namespace: str, labels: dict[str, str], ports: tuple[int, ...]
) -> tuple[tuple[tuple[int, MtlsMode], ...], tuple[PolicyRef, ...]]:
    """The mode of each of a workload's ports, and the policies behind them (for provenance)."""
    chain = applicable(policy, namespace, labels)
    modes = tuple((port, mtls_mode(chain, port)) for port in ports)
    return modes, tuple(sorted(policy_ref(policy, pa) for pa in chain))
