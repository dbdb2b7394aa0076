"""Generate self-signed development credentials for the gateways: a CA and, per credential, a server
certificate it signs, written as `<out>/<name>/{tls.crt,tls.key,ca.crt}` (docs/gateways.md).

    python scripts/dev_certs.py config/credentials ingress-cert=api.maximus.local,*.maximus.local \
        grpc-cert=grpc.maximus.local

For development only: the CA key is thrown away, the certificates are valid for ten years. Needs the
`cryptography` package (in the test extras: `pip install -e '.[test]'`).
"""

from __future__ import annotations

import datetime
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=3650)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], hosts: list[str], client: bool = False
) -> tuple[bytes, bytes]:
    """PEM (certificate, key) for `hosts`, signed by `ca`."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_credential(directory: Path, cert: bytes, key: bytes, ca: bytes | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(cert)
    (directory / "tls.key").write_bytes(key)
    if ca is not None:
        (directory / "ca.crt").write_bytes(ca)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    ca = make_ca("controlplane development CA")
    ca_pem = ca[1].public_bytes(serialization.Encoding.PEM)
    for spec in argv[1:]:
        name, _, hosts = spec.partition("=")
        cert, key = make_leaf(ca, hosts.split(","))
        write_credential(out / name, cert, key, ca_pem)
        print(f"wrote {out / name}/{{tls.crt,tls.key,ca.crt}} for {hosts}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
