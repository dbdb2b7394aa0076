"""The mesh identity service of a running control plane: each proxy's SDS secrets, and what status shows.

Every proxy gets two secrets on its ADS stream, with Istio's names: `default` (its workload certificate
chain and key, SPIFFE id spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>) and `ROOTCA` (the trust
bundle: every root that is trusted now, so a root rotation keeps old and new certificates valid during
the overlap). Nothing else of the mesh CA is ever served: a sidecar gets only its own identity, a gateway
additionally only the credentials of the Gateways that select it (model/gateway.py), and any other name a
proxy asks for is simply not in its snapshot.

Certificates come from the CertStore (security/workload_certs.py): the same bytes while a certificate is
valid, so snapshot versions stay equal across rebuilds and restarts; renewed at half life with jitter, at
which point the control plane republishes and only the affected shapes change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from controlplane.model.identity import ProxyIdentity
from controlplane.security.ca import CertificateAuthority, IssuedCert
from controlplane.security.spiffe import spiffe_id
from controlplane.security.workload_certs import CertStore
from controlplane.translate import names
from controlplane.translate.resources import SECRET
from controlplane.xds.status import StreamStatus


class MeshIdentity:
    def __init__(self, ca: CertificateAuthority, store: CertStore) -> None:
        self.ca = ca
        self.store = store

    def spiffe_id(self, identity: ProxyIdentity, trust_domain: str) -> str:
        return spiffe_id(trust_domain, identity.namespace, identity.service_account)

    def certificate(self, identity: ProxyIdentity, trust_domain: str) -> IssuedCert:
        return self.store.current(self.spiffe_id(identity, trust_domain), now=datetime.now(UTC))

    def secrets(self, identity: ProxyIdentity, trust_domain: str) -> list[tuple[str, str, secret_pb2.Secret]]:
        cert = self.certificate(identity, trust_domain)
        workload = secret_pb2.Secret(
            name=names.WORKLOAD_SECRET,
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_bytes=cert.cert_chain_pem),
                private_key=base_pb2.DataSource(inline_bytes=cert.private_key_pem),
            ),
        )
        root = secret_pb2.Secret(
            name=names.ROOT_SECRET,
            validation_context=common_pb2.CertificateValidationContext(
                # as of now: a previous root leaves the bundle once its overlap is over, without a restart
                trusted_ca=base_pb2.DataSource(inline_bytes=self.ca.trust_bundle(now=datetime.now(UTC)))
            ),
        )
        return [(SECRET, workload.name, workload), (SECRET, root.name, root)]

    def describe(self, status: StreamStatus, trust_domain: str) -> dict[str, Any]:
        """For /debug/syncz and `controlplane status`: who the proxy is and its certificate."""
        wanted = self.spiffe_id(status.identity, trust_domain)
        # the proxy's snapshot was built with this certificate, so this never issues a new one
        held = self.store.current(wanted, now=datetime.now(UTC))
        return {"spiffe_id": wanted, "authenticated": status.principal or None,
                "cert_serial": held.serial, "cert_expiry": held.not_after.isoformat()}
