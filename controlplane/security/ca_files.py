"""Reading and writing a CA directory (Istio's plug-in CA file names), with every check a startup needs.

`load_ca_files` either returns a CA that can sign (key matches certificate, certificate is a CA, the chain
is ordered and ends in a root of `root-cert.pem`, nothing expired) or raises CaError naming the file, what
is wrong and what to do. `previous-roots.json` records roots retired by `controlplane ca rotate` with their
rotation time (see rotation.py); it is ours, not Istio's, and only a generated CA has one.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from controlplane.security.files import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    CaError,
    ensure_private_dir,
    read_private,
    write_atomic,
)

CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
ROOT_CERT = "root-cert.pem"
CERT_CHAIN = "cert-chain.pem"
CA_FILES = (CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN)
PREVIOUS_ROOTS = "previous-roots.json"

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def pem_of(item: x509.Certificate | PublicKeyTypes) -> bytes:
    """PEM of a certificate, or the SubjectPublicKeyInfo PEM of a public key (to compare keys)."""
    if isinstance(item, x509.Certificate):
        return item.public_bytes(serialization.Encoding.PEM)
    return item.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_pem(key: SigningKey) -> bytes:
    """PKCS8 PEM of a private key, unencrypted (the file mode protects it, as in Istio's cacerts)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if `issuer`'s key signed `cert` (and the names chain)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or f"serial {cert.serial_number:x}"


@dataclass(frozen=True)
class LoadedCa:
    """A checked CA directory. `intermediates` go after the leaf in a workload chain (empty when the
    signing certificate is the root itself); `roots` is root-cert.pem's content, in file order."""

    ca_dir: Path
    key: SigningKey
    signing: x509.Certificate
    intermediates: list[x509.Certificate]
    root: x509.Certificate
    roots: list[x509.Certificate]
    previous: dict[str, datetime] = field(default_factory=dict)  # sha256 fingerprint -> rotated at

    @property
    def self_signed(self) -> bool:
        return not self.intermediates


def _certs(path: Path) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as e:
        raise CaError(f"{path}: cannot read: {e.strerror or e}") from e
    except ValueError as e:
        raise CaError(f"{path}: not a PEM certificate file ({e})") from e
    return certs


def _key(path: Path) -> SigningKey:
    data = read_private(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as e:
        raise CaError(
            f"{path}: the private key is encrypted; store it decrypted with mode 0600 "
            f"(`openssl pkey -in {path} -out {path}.plain`)"
        ) from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CaError(f"{path}: not a readable PEM private key ({e})") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CaError(f"{path}: unsupported key type {type(key).__name__}; use an ECDSA or RSA key")
    return key


def _check_is_ca(path: Path, cert: x509.Certificate) -> None:
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    try:
        can_sign = cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        can_sign = True  # no keyUsage extension means no restriction
    if not (is_ca and can_sign):
        raise CaError(
            f"{path}: {_describe(cert)} is not a CA certificate (it needs basicConstraints CA:TRUE and "
            "keyUsage keyCertSign); put the certificate of your root or intermediate CA there"
        )


def _check_validity(path: Path, cert: x509.Certificate, now: datetime) -> None:
    if cert.not_valid_after_utc <= now:
        raise CaError(
            f"{path}: {_describe(cert)} expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z; plug in a "
            "renewed CA (a generated CA: move this directory away to have a new root generated, then "
            "restart every proxy)"
        )
    if cert.not_valid_before_utc > now:
        raise CaError(
            f"{path}: {_describe(cert)} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S}Z; check this host's clock"
        )


def load_ca_files(ca_dir: Path, *, now: datetime, check_expiry: bool = True) -> LoadedCa:
    """The CA of `ca_dir` after every check; CaError naming the file otherwise."""
    missing = [n for n in CA_FILES if not (ca_dir / n).exists()]
    if missing:
        present = [n for n in CA_FILES if n not in missing]
        raise CaError(
            f"{ca_dir}: incomplete CA directory: {', '.join(present) or 'nothing'} present but "
            f"{', '.join(missing)} missing; provide all of {', '.join(CA_FILES)} (Istio's plug-in CA "
            "files), or remove them all to have a root generated"
        )
    signing_certs = _certs(ca_dir / CA_CERT)
    if len(signing_certs) != 1:
        raise CaError(
            f"{ca_dir / CA_CERT}: holds {len(signing_certs)} certificates; put only the signing CA's "
            f"certificate there and its chain in {CERT_CHAIN}"
        )
    signing = signing_certs[0]
    key = _key(ca_dir / CA_KEY)
    if pem_of(key.public_key()) != pem_of(signing.public_key()):
        raise CaError(
            f"{ca_dir / CA_KEY}: the key does not match the certificate in {ca_dir / CA_CERT}; put that "
            "certificate's key there (compare `openssl x509 -pubkey -noout -in ca-cert.pem` with "
            "`openssl pkey -pubout -in ca-key.pem`)"
        )
    _check_is_ca(ca_dir / CA_CERT, signing)

    chain = _certs(ca_dir / CERT_CHAIN)
    if chain and chain[0] == signing:
        chain = chain[1:]  # Istio's cert-chain.pem starts with ca-cert.pem itself
    path = [signing, *chain]
    roots = _certs(ca_dir / ROOT_CERT)
    for lower, upper in itertools.pairwise(path):
        if not issued_by(lower, upper):
            raise CaError(
                f"{ca_dir / CERT_CHAIN}: {_describe(lower)} is not signed by the next certificate "
                f"{_describe(upper)}; order it from {CA_CERT} up to the root"
            )
    top = path[-1]
    if issued_by(top, top):
        if top not in roots:
            raise CaError(
                f"{ca_dir / ROOT_CERT}: does not contain the root {_describe(top)} that "
                f"{CERT_CHAIN} ends in; put that root (first) in {ROOT_CERT}"
            )
        root, intermediates = top, path[:-1]
    else:
        issuers = [r for r in roots if issued_by(top, r)]
        if not issuers:
            raise CaError(
                f"{ca_dir / ROOT_CERT}: no root in it signed {_describe(top)}, the top of "
                f"{CERT_CHAIN}; put the root your CA chains to in {ROOT_CERT}"
            )
        root, intermediates = issuers[0], path
    for cert in intermediates[1:]:
        _check_is_ca(ca_dir / CERT_CHAIN, cert)
    if check_expiry:
        _check_validity(ca_dir / CA_CERT, signing, now)
        for cert in intermediates[1:]:
            _check_validity(ca_dir / CERT_CHAIN, cert, now)
        _check_validity(ca_dir / ROOT_CERT, root, now)
    previous = {fingerprint(c): at for c, at in read_previous_roots(ca_dir)}
    return LoadedCa(ca_dir, key, signing, intermediates, root, roots, previous)


def write_ca_files(
    ca_dir: Path,
    *,
    cert: x509.Certificate,
    key: SigningKey,
    roots: list[x509.Certificate],
    previous: list[tuple[x509.Certificate, datetime]] | None = None,
) -> None:
    """Write a self-signed CA (ca-cert = cert-chain = `cert`, root-cert = `roots`, `cert` first).

    Called under the directory's lock. Every file is renamed into place, the key and its certificate last
    and next to each other: a crash between those two renames (a window of microseconds) leaves a key that
    does not match the certificate, which the next start reports instead of signing with it."""
    ensure_private_dir(ca_dir)
    ca_dir.chmod(PRIVATE_DIR_MODE)
    if previous is not None:
        record = {
            "previous_roots": [
                {"rotated_at": at.isoformat(), "sha256": fingerprint(c), "subject": _describe(c),
                 "certificate": pem_of(c).decode()}
                for c, at in previous
            ]
        }
        write_atomic(ca_dir / PREVIOUS_ROOTS, json.dumps(record, indent=2).encode() + b"\n")
    write_atomic(ca_dir / ROOT_CERT, b"".join(pem_of(c) for c in roots))
    write_atomic(ca_dir / CERT_CHAIN, pem_of(cert))
    write_atomic(ca_dir / CA_KEY, key_pem(key), mode=PRIVATE_FILE_MODE)
    write_atomic(ca_dir / CA_CERT, pem_of(cert))


def read_previous_roots(ca_dir: Path) -> list[tuple[x509.Certificate, datetime]]:
    """The retired roots recorded in previous-roots.json, with their rotation times."""
    path = ca_dir / PREVIOUS_ROOTS
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text())["previous_roots"]
        return [
            (
                x509.load_pem_x509_certificate(e["certificate"].encode()),
                datetime.fromisoformat(e["rotated_at"]),
            )
            for e in entries
        ]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CaError(f"{path}: unreadable record of rotated roots ({e}); restore it from a backup") from e
