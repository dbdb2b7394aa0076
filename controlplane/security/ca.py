"""The mesh certificate authority: a root generated on first start, or the user's own CA, in Istio's files.

The CA directory uses Istio's plug-in CA file names, so a directory prepared for istiod works here:

- `ca-cert.pem`    the certificate that signs workload certificates (the root itself, or an intermediate);
- `ca-key.pem`     its private key (mode 0600 or stricter: a key others can read is refused, as ssh does);
- `root-cert.pem`  every trusted root, the one `ca-cert.pem` chains to first (served as `ROOTCA`);
- `cert-chain.pem` `ca-cert.pem`'s chain up to the root; it may start with `ca-cert.pem` itself, as Istio's
                   tooling writes it (for a generated CA all three certificate files hold the same root).

A directory with none of these files gets a generated self-signed root (ECDSA P-256, 10 years by default,
like istiod's); a directory with some but not all of them is an error (a half-copied CA must not silently
become a new one). Generation happens under the directory's lock and each file is renamed into place, so
replicas started at the same time end up with one CA (see `files.py`).

Workload certificates follow Istio's: empty subject and a critical URI SAN with the SPIFFE ID, ECDSA
P-256 keys, serverAuth+clientAuth, valid from one minute before `now` (clock skew between hosts) to
`now + ttl`, never beyond the signing chain's expiry nor beyond `max_workload_ttl` (Istio's
MAX_WORKLOAD_CERT_TTL, 90 days). That cap is what makes root rotation's overlap rule sound: see rotation.py.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane.security.ca_files import (
    CA_CERT,
    CA_FILES,
    LoadedCa,
    SigningKey,
    fingerprint,
    issued_by,
    key_pem,
    load_ca_files,
    pem_of,
    write_ca_files,
)
from controlplane.security.files import CaError, locked, require_utc
from controlplane.security.spiffe import SpiffeId

__all__ = ["MAX_WORKLOAD_CERT_TTL", "CaError", "CertificateAuthority", "IssuedCert", "generate_root"]

DEFAULT_TRUST_DOMAIN = "cluster.local"
ROOT_TTL = timedelta(days=3650)
MAX_WORKLOAD_CERT_TTL = timedelta(days=90)
CLOCK_SKEW = timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedCert:
    """A workload certificate and its key, as served in the SDS secret `default`."""

    spiffe_id: str
    cert_chain_pem: bytes  # leaf first, then the intermediates up to (not including) the root; no key
    # PKCS8 PEM; left out of repr() so no log line or assertion message ever prints the key
    private_key_pem: bytes = field(repr=False)
    serial: str  # lower-case hex without colons, as Envoy's admin /certs shows it
    not_before: datetime
    not_after: datetime

    @classmethod
    def from_pem(cls, cert_chain_pem: bytes, private_key_pem: bytes) -> IssuedCert:
        """Rebuild from the PEM bytes (e.g. read back from disk); ValueError if they are not one."""
        try:
            leaf = x509.load_pem_x509_certificates(cert_chain_pem)[0]
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            key = serialization.load_pem_private_key(private_key_pem, password=None)
        except (x509.ExtensionNotFound, TypeError, UnsupportedAlgorithm) as e:
            raise ValueError(f"not a workload certificate and key: {e}") from e
        ids = sans.get_values_for_type(x509.UniformResourceIdentifier)
        if len(ids) != 1:
            raise ValueError(f"a workload certificate has exactly one URI SAN, this one has {ids}")
        if pem_of(key.public_key()) != pem_of(leaf.public_key()):
            raise ValueError("the private key does not belong to the certificate")
        return cls(
            spiffe_id=ids[0],
            cert_chain_pem=cert_chain_pem,
            private_key_pem=private_key_pem,
            serial=serial_hex(leaf.serial_number),
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
        )


def serial_hex(serial: int) -> str:
    """Lower-case hex as BoringSSL prints it (whole bytes, so an even number of digits)."""
    text = f"{serial:x}"
    return "0" + text if len(text) % 2 else text


def _random_serial() -> int:
    # 127 random bits with the top bit of 16 bytes set: always 32 hex digits, positive, within RFC 5280's
    # 20 octets, and unique in practice (a repeated serial would make Envoy's /certs ambiguous)
    return secrets.randbits(127) | (1 << 127)


def generate_root(
    trust_domain: str, *, now: datetime, ttl: timedelta = ROOT_TTL
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed root CA for `trust_domain` (ECDSA P-256), valid from a minute before `now`."""
    now = require_utc(now)
    key = ec.generate_private_key(ec.SECP256R1())
    # the time in the CN tells a rotated root from its predecessor at a glance (and in chain building)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} root CA {now:%Y-%m-%dT%H:%M:%SZ}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_random_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


class CertificateAuthority:
    """Signs workload certificates with the CA of one directory; build it with `load_or_create`."""

    def __init__(
        self, loaded: LoadedCa, *, trust_domain: str, now: datetime, max_workload_ttl: timedelta
    ) -> None:
        self.trust_domain = trust_domain
        self.ca_dir = loaded.ca_dir
        self.max_workload_ttl = max_workload_ttl
        self._loaded = loaded
        self._key: SigningKey = loaded.key
        self._signing = loaded.signing
        self._chain_pem = b"".join(pem_of(c) for c in loaded.intermediates)
        # each root's PEM, made once: every proxy's snapshot asks for the bundle (`trust_bundle`)
        self._root_pems = {id(root): pem_of(root) for root in (loaded.root, *loaded.roots)}
        self._bundle_pem = self.trust_bundle(now=now)
        # the leaf's authorityKeyIdentifier must equal the issuer's subjectKeyIdentifier, however the
        # issuer computed it, or TLS stacks that pick the issuer by key id (BoringSSL) fail chain building
        try:
            ski = self._signing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            self._authority_key_id = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except x509.ExtensionNotFound:
            self._authority_key_id = x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()
            )

    @classmethod
    def load_or_create(
        cls,
        ca_dir: Path,
        *,
        now: datetime,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        root_ttl: timedelta = ROOT_TTL,
        max_workload_ttl: timedelta = MAX_WORKLOAD_CERT_TTL,
    ) -> CertificateAuthority:
        """Load the CA in `ca_dir`, generating a self-signed root there first if it holds no CA files.

        Raises CaError (naming the file, the problem and the fix) for a directory that cannot be used.
        """
        now = require_utc(now)
        SpiffeId(trust_domain, "ns", "sa")  # validates the trust domain
        with locked(ca_dir):
            if not any((ca_dir / name).exists() for name in CA_FILES):
                cert, key = generate_root(trust_domain, now=now, ttl=root_ttl)
                try:
                    write_ca_files(ca_dir, cert=cert, key=key, roots=[cert])
                except OSError as e:
                    raise CaError(f"{ca_dir}: cannot write a generated CA there: {e.strerror or e}") from e
            loaded = load_ca_files(ca_dir, now=now)
        return cls(loaded, trust_domain=trust_domain, now=now, max_workload_ttl=max_workload_ttl)

    @property
    def self_signed(self) -> bool:
        """True for a generated (or user-made) root that signs workload certificates itself."""
        return self._loaded.self_signed

    @property
    def trust_bundle_pem(self) -> bytes:
        """Every trusted root, the signing root first (the `ROOTCA` secret), as of loading time."""
        return self._bundle_pem

    def trust_bundle(self, *, now: datetime) -> bytes:
        """The trust bundle at `now`: a previous root leaves it `max_workload_ttl` after its rotation."""
        now = require_utc(now)
        keep = [self._loaded.root]
        for root in self._loaded.roots:
            if root in keep or root.not_valid_after_utc <= now:
                continue
            rotated_at = self._loaded.previous.get(fingerprint(root))
            if rotated_at is not None and now > rotated_at + self.max_workload_ttl:
                continue
            keep.append(root)
        return b"".join(self._root_pems.get(id(c)) or pem_of(c) for c in keep)

    @property
    def root_not_after(self) -> datetime:
        """When the root that the signing chain ends in expires."""
        return self._loaded.root.not_valid_after_utc

    @property
    def signing_not_after(self) -> datetime:
        """The latest expiry a workload certificate can have: the signing chain's earliest expiry."""
        chain = [self._signing, *self._loaded.intermediates, self._loaded.root]
        return min(c.not_valid_after_utc for c in chain)

    def issued_this(self, issued: IssuedCert) -> bool:
        """True if `issued` was signed by this CA's signing certificate and carries its current chain."""
        try:
            leaf = x509.load_pem_x509_certificates(issued.cert_chain_pem)[0]
        except ValueError:
            return False
        return issued_by(leaf, self._signing) and issued.cert_chain_pem == pem_of(leaf) + self._chain_pem

    def issue(
        self,
        spiffe_id: str,
        *,
        ttl: timedelta,
        now: datetime,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
    ) -> IssuedCert:
        """A new key and workload certificate for `spiffe_id` (ValueError if it is not a SPIFFE ID).

        Any trust domain is signed, not only `self.trust_domain` (the one the generated root is named
        after): MeshConfig `trustDomain` can change while the control plane runs, and the identity is the
        URI SAN, which peers match against the trust domain in force, not the root's name (as istiod)."""
        now = require_utc(now)
        SpiffeId.parse(spiffe_id)
        if ttl <= timedelta(0):
            raise ValueError(f"certificate ttl must be positive, got {ttl}")
        not_after = min(now + min(ttl, self.max_workload_ttl), self.signing_not_after)
        if not_after <= now:
            raise CaError(
                f"{self.ca_dir / CA_CERT}: the signing CA expired at "
                f"{self.signing_not_after:%Y-%m-%d %H:%M}Z; rotate the root (`controlplane ca rotate`) "
                "or plug in a new CA"
            )
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
        sans += [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._signing.subject)
            .public_key(key.public_key())
            .serial_number(_random_serial())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            # critical because the subject is empty (RFC 5280 4.2.1.6), as in Istio's workload certificates
            .add_extension(x509.SubjectAlternativeName(sans), critical=True)
            .add_extension(self._authority_key_id, critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return IssuedCert(
            spiffe_id=spiffe_id,
            cert_chain_pem=pem_of(cert) + self._chain_pem,
            private_key_pem=key_pem(key),
            serial=serial_hex(cert.serial_number),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )
