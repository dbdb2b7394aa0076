"""Loads the mesh CA for `controlplane serve` and hands the server what it needs: the proxies' secrets
(security/identity.py), the stream authenticator (xds/auth.py with security/tokens.py), the xDS port's TLS
credentials and the certificate metrics.

The xDS server certificate is issued by the mesh CA for `spiffe://<trustDomain>/ns/<rootNamespace>/sa/
controlplane` (what bootstraps pin, bootstrap.py) plus the listen address as IP/DNS SAN, and re-issued at
half life through grpc's dynamic credentials, so the port never serves an expired certificate.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from prometheus_client import Counter, Gauge

from controlplane.model.identity import SocketAddress
from controlplane.security.ca import CertificateAuthority, IssuedCert
from controlplane.security.identity import MeshIdentity
from controlplane.security.tokens import TokenAuthority
from controlplane.security.workload_certs import CertStore
from controlplane.xds.auth import TokenAuthenticator

log = logging.getLogger(__name__)

CERT_EXPIRY = Gauge("controlplane_cert_expiry_timestamp_seconds",
                    "Soonest expiry (Unix time) of the workload certificates the control plane holds")
ROOT_EXPIRY = Gauge("controlplane_root_cert_expiry_timestamp_seconds", "Expiry (Unix time) of the mesh root")
CERTS_ISSUED = Counter("controlplane_certs_issued", "Workload certificates issued (including renewals)")
XDS_SERVER_ACCOUNT = "controlplane"
XDS_SERVER_NAMESPACE = "istio-system"


@dataclass
class MeshRuntime:
    ca: CertificateAuthority
    certs: CertStore
    tokens: TokenAuthority
    identity: MeshIdentity
    ttl: timedelta
    _issued_seen: int = field(default=0, repr=False)

    def authenticator(self, trust_domain: Callable[[], str]) -> TokenAuthenticator:
        return TokenAuthenticator(lambda token, now: self.tokens.verify(token, now=now), trust_domain)

    def server_credentials(self, address: str) -> grpc.ServerCredentials:
        host = SocketAddress.parse(address).host
        ips = [host] if _is_ip(host) else []
        dns = [] if ips else [host]
        if "127.0.0.1" not in ips:
            ips.append("127.0.0.1")
        spiffe = f"spiffe://{self.ca.trust_domain}/ns/{XDS_SERVER_NAMESPACE}/sa/{XDS_SERVER_ACCOUNT}"
        current: list[IssuedCert] = []

        def issue() -> IssuedCert:
            cert = self.ca.issue(spiffe, ttl=self.ttl, now=datetime.now(UTC), dns_names=dns, ip_addresses=ips)
            current[:] = [cert]
            return cert

        def configuration(cert: IssuedCert) -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration([(cert.private_key_pem, cert.cert_chain_pem)])

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # called by grpc on each new handshake: a new configuration only once the old one is half-lived
            cert = current[0]
            if datetime.now(UTC) < self.certs.renew_at(cert):
                return None
            log.info("renewing the xDS server certificate")
            return configuration(issue())

        return grpc.dynamic_ssl_server_credentials(configuration(issue()), fetch,
                                                   require_client_authentication=False)

    def update_metrics(self) -> None:
        expiry = self.certs.soonest_expiry()
        if expiry is not None:
            CERT_EXPIRY.set(expiry.timestamp())
        ROOT_EXPIRY.set(self.ca.root_not_after.timestamp())
        issued = self.certs.issued_total()
        if issued > self._issued_seen:
            CERTS_ISSUED.inc(issued - self._issued_seen)
            self._issued_seen = issued


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def load_mesh_identity(ca_dir: Path, ttl: timedelta) -> MeshRuntime:
    """Raises CaError (a clear message for the CLI) when the directory's CA cannot be used."""
    ca = CertificateAuthority.load_or_create(ca_dir, now=datetime.now(UTC))
    # files written in a thread of their own: a new proxy's certificate is served before its fsync ends
    certs = CertStore(ca, ttl=ttl, state_dir=ca_dir,
                      writer=ThreadPoolExecutor(max_workers=1, thread_name_prefix="cert-store"))
    runtime = MeshRuntime(ca, certs, TokenAuthority.load_or_create(ca_dir), MeshIdentity(ca, certs), ttl)
    log.info("mesh CA from %s (trust domain %s, root expires %s); workload certificates live %s",
             ca_dir, ca.trust_domain, ca.root_not_after.isoformat(), ttl)
    runtime.update_metrics()
    return runtime
