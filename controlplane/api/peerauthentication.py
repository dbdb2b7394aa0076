"""PeerAuthentication (security.istio.io): whether a workload's inbound side accepts mTLS, plaintext or both.

Mirrors istio/api `security/v1/peer_authentication.proto`: `selector.matchLabels`, `mtls.mode` and
`portLevelMtls` (port number → mode). Modes: UNSET (inherit from the enclosing scope), DISABLE (plaintext
only), PERMISSIVE (both, Istio's default when nothing is set), STRICT (mTLS only).

Scopes, as Istio resolves them (model/peerauth.py): the policy without selector in the root namespace
(MeshConfig `rootNamespace`, default istio-system) is mesh-wide; one without selector in a namespace applies
to that namespace; one with a selector to the workloads whose labels match it, in its namespace.
`portLevelMtls` is only allowed with a selector (Istio rejects it otherwise).
See https://istio.io/latest/docs/reference/config/security/peer_authentication/.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field

from controlplane.api.meta import IstioModel, PolicyObject, PortNumber, Problem

SecurityApiVersion = Literal["security.istio.io/v1", "security.istio.io/v1beta1"]
MtlsModeName = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class MutualTls(IstioModel):
    mode: Annotated[MtlsModeName, BeforeValidator(_upper)] = "UNSET"


class WorkloadSelector(IstioModel):
    """Istio's WorkloadSelector. An empty `matchLabels` would select every workload of the namespace —
    what leaving `selector` out says — so at least one label is required."""

    match_labels: dict[str, str] = Field(min_length=1)


class PeerAuthenticationSpec(IstioModel):
    selector: WorkloadSelector | None = None
    mtls: MutualTls | None = None
    # YAML keys are port numbers; pydantic turns "9101" into 9101 and rejects non-numbers.
    port_level_mtls: dict[PortNumber, MutualTls] = Field(default_factory=dict)


class PeerAuthentication(PolicyObject):
    KIND: ClassVar[str] = "PeerAuthentication"

    api_version: SecurityApiVersion  # type: ignore[assignment]
    kind: Literal["PeerAuthentication"]
    spec: PeerAuthenticationSpec = PeerAuthenticationSpec()

    @property
    def mode(self) -> MtlsModeName:
        return self.spec.mtls.mode if self.spec.mtls is not None else "UNSET"

    def check(self) -> Iterator[Problem]:
        if self.spec.port_level_mtls and self.spec.selector is None:
            # Istio's validation: port numbers only mean something for a selected workload.
            yield Problem(("spec", "portLevelMtls"), "portLevelMtls requires a selector (Istio rejects it)")
