"""Root rotation of a self-signed (generated) mesh CA, keeping both roots trusted during the overlap.

`rotate_root` generates a new root and makes it the signing CA (`ca-cert.pem`, `ca-key.pem`,
`cert-chain.pem`); `root-cert.pem` becomes the new root followed by the old ones, and the old root is
recorded in `previous-roots.json` with the rotation time. Control planes loading the directory afterwards
sign with the new root and serve both roots in `ROOTCA`, so a proxy that still holds a certificate signed
by the old root and one that already has a new certificate trust each other.

The overlap rule, kept simple: a previous root stays in the trust bundle until `rotated_at +
max_workload_ttl` (CertificateAuthority's parameter, Istio's MAX_WORKLOAD_CERT_TTL of 90 days by default),
then it is dropped from `ROOTCA` (the file keeps it until it expires; dropping is decided at load time from
the recorded rotation time, so every replica agrees). The CA never issues a workload certificate longer
than `max_workload_ttl`, so every certificate the old root signed before the rotation has expired by then.
The one assumption: every control-plane replica is restarted (and so signs with the new root) well within
that window, since a replica still running on the old files keeps signing with the old root. A root expires
too: roots past their not_after are pruned from the files at the next rotation.

A plugged-in CA (an intermediate signed by the user's root) is the user's to rotate: we never hold its
root's key, so `rotate_root` refuses with a CaError saying what to do instead.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from controlplane.security.ca import CLOCK_SKEW, DEFAULT_TRUST_DOMAIN, generate_root
from controlplane.security.ca_files import (
    CA_CERT,
    CA_FILES,
    CERT_CHAIN,
    ROOT_CERT,
    fingerprint,
    load_ca_files,
    read_previous_roots,
    write_ca_files,
)
from controlplane.security.files import CaError, locked, require_utc


@dataclass(frozen=True)
class Rotation:
    """What `rotate` did: the new signing root and the root it replaced."""

    new_root: x509.Certificate
    previous_root: x509.Certificate
    rotated_at: datetime
    trusted_roots: int  # roots now in root-cert.pem


def _trust_domain_of(root: x509.Certificate) -> str:
    # generated roots carry the trust domain as O (and in the CN), as istiod's self-signed root does
    names = root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    value = names[0].value if names else DEFAULT_TRUST_DOMAIN
    return value if isinstance(value, str) else value.decode()


def rotate(ca_dir: Path, *, now: datetime) -> Rotation:
    """Rotate the root of the self-signed CA in `ca_dir` (see the module docstring); CaError otherwise."""
    now = require_utc(now)
    with locked(ca_dir):
        if not any((ca_dir / name).exists() for name in CA_FILES):
            raise CaError(f"{ca_dir}: no CA to rotate; the control plane generates a root on first start")
        loaded = load_ca_files(ca_dir, now=now, check_expiry=False)
        if not loaded.self_signed:
            raise CaError(
                f"{ca_dir / CA_CERT}: a plugged-in CA (signed by {loaded.root.subject.rfc4514_string()}); "
                f"rotate your CA files yourself: add the new root to {ROOT_CERT} next to the old one, "
                f"restart, then replace {CA_CERT}, ca-key.pem and {CERT_CHAIN} with the new intermediate "
                "and restart again once every workload has a new certificate"
            )
        old = loaded.root
        lifetime = old.not_valid_after_utc - old.not_valid_before_utc - CLOCK_SKEW
        new_cert, new_key = generate_root(_trust_domain_of(old), now=now, ttl=lifetime)
        alive = [r for r in loaded.roots if r.not_valid_after_utc > now and r != old]
        roots = [new_cert, old, *alive] if old.not_valid_after_utc > now else [new_cert, *alive]
        in_file = {fingerprint(r) for r in roots}
        previous = [(c, at) for c, at in read_previous_roots(ca_dir) if fingerprint(c) in in_file]
        if fingerprint(old) in in_file:
            previous.append((old, now))
        write_ca_files(ca_dir, cert=new_cert, key=new_key, roots=roots, previous=previous)
    return Rotation(new_root=new_cert, previous_root=old, rotated_at=now, trusted_roots=len(roots))


def rotate_root(ca_dir: Path, *, now: datetime) -> None:
    """Rotate the root of the generated CA in `ca_dir` (see the module docstring); CaError otherwise."""
    rotate(ca_dir, now=now)


def _describe(cert: x509.Certificate) -> str:
    return (
        f"{cert.subject.rfc4514_string()} (serial {cert.serial_number:x}, "
        f"expires {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z)"
    )


def main_rotate(ca_dir: Path) -> int:
    """`controlplane ca rotate --ca-dir DIR`: rotate now, print what happened; exit status 0 or 1."""
    try:
        done = rotate(ca_dir, now=datetime.now(UTC))
    except CaError as e:
        print(f"controlplane ca rotate: {e}", file=sys.stderr)
        return 1
    print(f"rotated the root CA in {ca_dir}")
    print(f"  new signing root: {_describe(done.new_root)}")
    print(f"  previous root:    {_describe(done.previous_root)}")
    print(
        f"  {ROOT_CERT} now holds {done.trusted_roots} roots; the previous one stays in ROOTCA for the "
        "maximum workload certificate lifetime after this rotation, then is dropped."
    )
    print(
        "  restart every control-plane replica now: they sign with the new root from then on, and proxies "
        "get new certificates and both roots on their next push."
    )
    return 0
