"""Upstream TLS of a cluster: DestinationRule `tls`, or Istio's auto mTLS toward endpoints with a sidecar.

Auto mTLS (istio: pilot/pkg/networking/core/cluster_tls.go, xds/endpoints/mtls_checker.go): without a
DestinationRule `tls`, a proxy uses ISTIO_MUTUAL toward an endpoint iff the endpoint has the label
`security.istio.io/tlsMode: istio` (it runs a sidecar; the local mesh and the compose generator set it) and
the endpoint's own PeerAuthentication does not DISABLE mTLS; every other endpoint is called in plaintext.
The cluster then carries both transport sockets and each endpoint picks one by its metadata.

The server's PeerAuthentication mode is read at workload level (its `portLevelMtls` entry for the service
port when one exists): without traffic capture the endpoint port is the sidecar's inbound listener, not
the app port `portLevelMtls` names.

ISTIO_MUTUAL verifies the server's certificate against the mesh root and its URI SAN against the
destination's identities: `subjectAltNames` when the rule gives them, else the SPIFFE ids of the service's
endpoints (`serviceAccount`, default `default`, as Istio's). SNI is Istio's
`outbound_.<port>_.<subset>_.<host>`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from controlplane.api.clienttls import ClientTLSSettings
from controlplane.api.policyset import PolicySet
from controlplane.api.workloadentry import WorkloadEntrySpec
from controlplane.model.destinationrules import HostRules
from controlplane.model.gatewaymodel import TlsCredential
from controlplane.model.peerauth import MtlsMode, applicable, mtls_mode
from controlplane.model.tlsmodel import UpstreamTls, UpstreamTlsMode

if TYPE_CHECKING:
    from controlplane.model.proxy_model import Cluster

TLS_MODE_LABEL = "security.istio.io/tlsMode"
TLS_MODE_ISTIO = "istio"
DEFAULT_SERVICE_ACCOUNT = "default"
DEFAULT_TRUST_DOMAIN = "cluster.local"


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def trust_domain(policy: PolicySet) -> str:
    mesh = policy.mesh_config()
    return mesh.spec.trust_domain if mesh is not None else DEFAULT_TRUST_DOMAIN


def has_sidecar(labels: dict[str, str]) -> bool:
    return labels.get(TLS_MODE_LABEL) == TLS_MODE_ISTIO


class EndpointTls:
    """Decides, per workload, whether auto mTLS applies (cached: one PeerAuthentication lookup per
    distinct namespace and label set, not per cluster)."""

    def __init__(self, policy: PolicySet) -> None:
        self.policy = policy
        self.trust_domain = trust_domain(policy)
        self._modes: dict[tuple[str, tuple[tuple[str, str], ...], int], MtlsMode] = {}

    def accepts_mtls(self, namespace: str, labels: dict[str, str], port: int) -> bool:
        if not has_sidecar(labels):
            return False
        key = (namespace, tuple(sorted(labels.items())), port)
        mode = self._modes.get(key)
        if mode is None:
            mode = self._modes[key] = mtls_mode(applicable(self.policy, namespace, labels), port)
        return mode.accepts_mtls

    def identities(self, namespace: str, workloads: Iterable[WorkloadEntrySpec]) -> tuple[str, ...]:
        """The SPIFFE ids a client may accept from the service's sidecars (not from its other endpoints,
        which it calls in plaintext)."""
        return tuple(sorted({
            spiffe_id(self.trust_domain, namespace, w.service_account or DEFAULT_SERVICE_ACCOUNT)
            for w in workloads if has_sidecar(w.labels)
        }))


def client_tls_setting(rules: HostRules | None, port: int, subset: str) -> ClientTLSSettings | None:
    """The DestinationRule `tls` for one cluster: subset over rule, port-level over the policy's own."""
    if rules is None:
        return None
    policies = []
    if subset and (subset_rule := rules.subsets.get(subset)) is not None:
        policies.append(subset_rule.traffic_policy)
    policies.append(rules.traffic_policy)
    for traffic_policy in policies:
        if traffic_policy is None:
            continue
        for setting in traffic_policy.port_level_settings:
            if setting.port.number == port and setting.tls is not None:
                return setting.tls
        if traffic_policy.tls is not None:
            return traffic_policy.tls
    return None


def istio_sni(host: str, port: int, subset: str) -> str:
    """Istio's SNI toward a mesh endpoint (pilot/pkg/model BuildDNSSrvSubsetKey)."""
    return f"outbound_.{port}_.{subset}_.{host}"


def upstream_tls(
    setting: ClientTLSSettings | None,
    *,
    host: str,
    port: int,
    subset: str,
    identities: tuple[str, ...],
    any_sidecar: bool,
    credential_has_ca: bool,
    http2: bool,
) -> UpstreamTls | None:
    if setting is None:
        if not any_sidecar:
            return None
        return UpstreamTls(UpstreamTlsMode.ISTIO_MUTUAL, istio_sni(host, port, subset), identities,
                           only_sidecars=True, http2=http2)
    if setting.mode == "DISABLE":
        return None
    mode = UpstreamTlsMode(setting.mode)
    sans = setting.subject_alt_names
    if mode is UpstreamTlsMode.ISTIO_MUTUAL:
        return UpstreamTls(mode, setting.sni or istio_sni(host, port, subset), sans or identities,
                           insecure_skip_verify=bool(setting.insecure_skip_verify), http2=http2)
    return UpstreamTls(
        mode,
        setting.sni or host,
        sans,
        credential=setting.credential_name or setting.file_credential,
        credential_has_ca=credential_has_ca,
        files=setting.files,
        insecure_skip_verify=bool(setting.insecure_skip_verify),
        http2=http2,
    )


def client_credentials(
    policy: PolicySet, clusters: Iterable[Cluster], served: Collection[str] = ()
) -> tuple[TlsCredential, ...]:
    """The credential files a proxy's clusters use (DestinationRule SIMPLE/MUTUAL `credentialName`),
    except those already `served` (a gateway's own). SIMPLE needs only the CA: the key is not sent."""
    needs_key: dict[str, bool] = {}
    files: dict[str, tuple[str | None, str | None, str | None]] = {}
    for cluster in clusters:
        tls = cluster.tls
        if tls is None or tls.credential is None or tls.credential in served:
            continue
        needs_key[tls.credential] = needs_key.get(tls.credential, False) or tls.mode is UpstreamTlsMode.MUTUAL
        if tls.files is not None:
            files[tls.credential] = tls.files
    out = []
    for name, key in sorted(needs_key.items()):
        if name in files:
            # Paths on the proxy's file system: secrets naming the files (SIMPLE sends no certificate).
            cert, private_key, ca = files[name]
            out.append(TlsCredential(name, b"", b"", None,
                                     files=(cert, private_key, ca) if key else (None, None, ca)))
            continue
        found = policy.credentials.get(name)
        if found is None:
            continue
        if key:
            out.append(TlsCredential(name, found.cert_chain, found.private_key, found.ca_cert))
        else:
            out.append(TlsCredential(name, b"", b"", found.ca_cert))
    return tuple(out)
