"""The mesh CA: generated root (stable across loads, private files, one CA when replicas race), a plugged-in
intermediate CA whose chain verifies, every bad CA directory a CaError naming the file, workload leaves
shaped as Istio's, SPIFFE IDs, and root rotation keeping both roots trusted during the overlap."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane.security.ca import CaError, CertificateAuthority, IssuedCert, generate_root
from controlplane.security.rotation import main_rotate, rotate_root
from controlplane.security.spiffe import SpiffeId, spiffe_id

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
WEB = "spiffe://cluster.local/ns/shop/sa/web"
# digitalSignature, keyCertSign, cRLSign
CA_KEY_USAGE = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
CA_FILES = ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem")


def verify(issued: IssuedCert, roots_pem: bytes, *, now: datetime = NOW) -> None:
    """Raises unless `issued`'s chain verifies up to one of `roots_pem` as a TLS client certificate."""
    certs = x509.load_pem_x509_certificates(issued.cert_chain_pem)
    roots = x509.load_pem_x509_certificates(roots_pem)
    try:
        from cryptography.x509 import verification
    except ImportError:  # cryptography < 43: check the signatures by hand
        for lower, upper in itertools.pairwise(certs):
            lower.verify_directly_issued_by(upper)
        assert any(_issued_by(certs[-1], r) for r in roots), "the chain reaches no trusted root"
        return
    verifier = (
        verification.PolicyBuilder().store(verification.Store(roots)).time(now).build_client_verifier()
    )
    verified = verifier.verify(certs[0], certs[1:])
    assert x509.UniformResourceIdentifier(issued.spiffe_id) in verified.subjects


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:
        return False
    return True


def verifies(issued: IssuedCert, roots_pem: bytes, *, now: datetime = NOW) -> bool:
    try:
        verify(issued, roots_pem, now=now)
    except Exception:
        return False
    return True


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- SPIFFE IDs ---


def test_spiffe_id_round_trip() -> None:
    text = spiffe_id("cluster.local", "shop", "web")
    assert text == WEB
    assert SpiffeId.parse(text) == SpiffeId("cluster.local", "shop", "web")
    assert str(SpiffeId.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "https://cluster.local/ns/shop/sa/web",
        "spiffe://cluster.local/ns/shop/sa/web/extra",
        "spiffe://cluster.local/ns/shop/svc/web",
        "spiffe://cluster.local/ns//sa/web",
        "spiffe://Cluster.Local/ns/shop/sa/web",
        "spiffe://cluster.local",
        "spiffe:///ns/shop/sa/web",
        "spiffe://cluster.local/ns/../sa/web",
    ],
)
def test_spiffe_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        SpiffeId.parse(text)


# --- generated root ---


def test_generated_root_is_private_and_stable(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    ca = CertificateAuthority.load_or_create(ca_dir, now=NOW)
    assert _mode(ca_dir) == 0o700
    assert _mode(ca_dir / "ca-key.pem") == 0o600
    assert all((ca_dir / n).exists() for n in CA_FILES)
    root = x509.load_pem_x509_certificate((ca_dir / "root-cert.pem").read_bytes())
    assert (ca_dir / "ca-cert.pem").read_bytes() == (ca_dir / "root-cert.pem").read_bytes()
    assert (ca_dir / "cert-chain.pem").read_bytes() == (ca_dir / "ca-cert.pem").read_bytes()
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "cluster.local"
    assert ca.root_not_after == NOW + timedelta(days=3650)
    assert ca.trust_bundle_pem == (ca_dir / "root-cert.pem").read_bytes()

    again = CertificateAuthority.load_or_create(ca_dir, now=NOW + timedelta(days=1))
    assert again.trust_bundle_pem == ca.trust_bundle_pem
    # a leaf from the reloaded CA verifies against the first load's bundle: same key, same trust
    verify(again.issue(WEB, ttl=timedelta(hours=24), now=NOW), ca.trust_bundle_pem)


def _create(ca_dir: str, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:
    barrier.wait()
    try:
        out.put(CertificateAuthority.load_or_create(Path(ca_dir), now=NOW).trust_bundle_pem)
    except Exception as e:  # reported to the test instead of leaving it waiting
        out.put(repr(e).encode())


def test_replicas_racing_to_create_end_with_one_ca(tmp_path: Path) -> None:
    # fork is ~10x faster than spawn (no re-import); forking a multi-threaded process is unsafe, though
    ctx = multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")
    n = 3
    barrier = ctx.Barrier(n)
    out = ctx.Queue()
    procs = [ctx.Process(target=_create, args=(str(tmp_path / "ca"), barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        bundles = [out.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * n
    assert len(set(bundles)) == 1
    assert bundles[0] == (tmp_path / "ca" / "root-cert.pem").read_bytes()
    CertificateAuthority.load_or_create(tmp_path / "ca", now=NOW)  # and the files are a consistent CA


# --- plugged-in CA ---


def _intermediate(
    root: x509.Certificate, root_key: ec.EllipticCurvePrivateKey, *, ca: bool = True
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intermediate CA")]))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False
        )
    )
    if ca:
        builder = builder.add_extension(
            CA_KEY_USAGE, critical=True
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(root_key, hashes.SHA256()), key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _plug_in(ca_dir: Path, *, ca: bool = True) -> tuple[x509.Certificate, x509.Certificate]:
    """An Istio-style plug-in CA directory: root + intermediate, cert-chain = intermediate + root."""
    root, root_key = generate_root("cluster.local", now=NOW - timedelta(days=2))
    inter, inter_key = _intermediate(root, root_key, ca=ca)
    ca_dir.mkdir(mode=0o700)
    (ca_dir / "ca-cert.pem").write_bytes(_pem(inter))
    (ca_dir / "ca-key.pem").write_bytes(_key_pem(inter_key))
    (ca_dir / "ca-key.pem").chmod(0o600)
    (ca_dir / "root-cert.pem").write_bytes(_pem(root))
    (ca_dir / "cert-chain.pem").write_bytes(_pem(inter) + _pem(root))
    return root, inter


def test_plugged_in_intermediate_signs_chains_that_verify(tmp_path: Path) -> None:
    root, inter = _plug_in(tmp_path / "ca")
    ca = CertificateAuthority.load_or_create(tmp_path / "ca", now=NOW)
    assert not ca.self_signed
    assert ca.trust_bundle_pem == _pem(root)
    assert ca.root_not_after == root.not_valid_after_utc
    leaf = ca.issue(WEB, ttl=timedelta(hours=24), now=NOW)
    # leaf, then the intermediate; the root is only in ROOTCA
    assert x509.load_pem_x509_certificates(leaf.cert_chain_pem)[1:] == [inter]
    verify(leaf, _pem(root))
    # the leaf's lifetime is capped by the intermediate's expiry
    long_leaf = ca.issue(WEB, ttl=timedelta(days=400), now=NOW)
    assert long_leaf.not_after == min(inter.not_valid_after_utc, NOW + timedelta(days=90))
    # our files were used, not replaced
    assert (tmp_path / "ca" / "ca-cert.pem").read_bytes() == _pem(inter)


def test_cert_chain_without_the_ca_cert_itself_is_accepted(tmp_path: Path) -> None:
    root, _ = _plug_in(tmp_path / "ca")
    (tmp_path / "ca" / "cert-chain.pem").write_bytes(_pem(root))
    ca = CertificateAuthority.load_or_create(tmp_path / "ca", now=NOW)
    verify(ca.issue(WEB, ttl=timedelta(hours=1), now=NOW), _pem(root))


# --- bad CA directories ---


def _generated(tmp_path: Path) -> Path:
    ca_dir = tmp_path / "ca"
    CertificateAuthority.load_or_create(ca_dir, now=NOW)
    return ca_dir


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    ca_dir = _generated(tmp_path)
    (ca_dir / "ca-key.pem").chmod(0o644)
    with pytest.raises(CaError, match=r"ca-key\.pem.*0644.*chmod 600"):
        CertificateAuthority.load_or_create(ca_dir, now=NOW)


def test_key_not_matching_the_certificate(tmp_path: Path) -> None:
    ca_dir = _generated(tmp_path)
    (ca_dir / "ca-key.pem").write_bytes(_key_pem(ec.generate_private_key(ec.SECP256R1())))
    match = r"ca-key\.pem: the key does not match the certificate in .*ca-cert\.pem"
    with pytest.raises(CaError, match=match):
        CertificateAuthority.load_or_create(ca_dir, now=NOW)


def test_unreadable_key(tmp_path: Path) -> None:
    ca_dir = _generated(tmp_path)
    garbage = b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    (ca_dir / "ca-key.pem").write_bytes(garbage)
    with pytest.raises(CaError, match=r"ca-key\.pem: not a readable PEM private key"):
        CertificateAuthority.load_or_create(ca_dir, now=NOW)


def test_partial_set_of_files_is_not_replaced_by_a_new_ca(tmp_path: Path) -> None:
    ca_dir = _generated(tmp_path)
    (ca_dir / "cert-chain.pem").unlink()
    before = (ca_dir / "ca-cert.pem").read_bytes()
    with pytest.raises(CaError, match=r"incomplete CA directory: .* but cert-chain\.pem missing"):
        CertificateAuthority.load_or_create(ca_dir, now=NOW)
    assert (ca_dir / "ca-cert.pem").read_bytes() == before
    assert not (ca_dir / "cert-chain.pem").exists()


def test_ca_cert_that_is_not_a_ca(tmp_path: Path) -> None:
    _plug_in(tmp_path / "ca", ca=False)
    with pytest.raises(CaError, match=r"ca-cert\.pem: .*is not a CA certificate"):
        CertificateAuthority.load_or_create(tmp_path / "ca", now=NOW)


def test_expired_root(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    CertificateAuthority.load_or_create(ca_dir, now=NOW, root_ttl=timedelta(days=1))
    with pytest.raises(CaError, match=r"ca-cert\.pem: .* expired at"):
        CertificateAuthority.load_or_create(ca_dir, now=NOW + timedelta(days=2))


def test_plugged_in_root_expired(tmp_path: Path) -> None:
    _plug_in(tmp_path / "ca")
    with pytest.raises(CaError, match=r"(ca-cert|root-cert)\.pem: .* expired at"):
        CertificateAuthority.load_or_create(tmp_path / "ca", now=NOW + timedelta(days=4000))


def test_chain_not_reaching_root_cert(tmp_path: Path) -> None:
    _plug_in(tmp_path / "ca")
    other_root, _ = generate_root("cluster.local", now=NOW)
    (tmp_path / "ca" / "root-cert.pem").write_bytes(_pem(other_root))
    with pytest.raises(CaError, match=r"root-cert\.pem: does not contain the root"):
        CertificateAuthority.load_or_create(tmp_path / "ca", now=NOW)


def test_chain_out_of_order(tmp_path: Path) -> None:
    root, inter = _plug_in(tmp_path / "ca")
    other_root, _ = generate_root("cluster.local", now=NOW)
    (tmp_path / "ca" / "cert-chain.pem").write_bytes(_pem(inter) + _pem(other_root) + _pem(root))
    with pytest.raises(CaError, match=r"cert-chain\.pem: .* is not signed by the next certificate"):
        CertificateAuthority.load_or_create(tmp_path / "ca", now=NOW)


def test_naive_time_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CertificateAuthority.load_or_create(tmp_path / "ca", now=datetime(2026, 1, 1))


# --- workload leaves ---


def test_leaf_is_shaped_like_istios(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca", now=NOW)
    issued = ca.issue(
        WEB, ttl=timedelta(hours=24), now=NOW, dns_names=["web.shop"], ip_addresses=["10.0.0.7"]
    )
    leaf = x509.load_pem_x509_certificates(issued.cert_chain_pem)
    assert len(leaf) == 1  # self-signed CA: the root goes only in ROOTCA
    cert = leaf[0]
    assert cert.subject == x509.Name([])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [WEB]
    assert san.value.get_values_for_type(x509.DNSName) == ["web.shop"]
    assert [str(a) for a in san.value.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    key = serialization.load_pem_private_key(issued.private_key_pem, password=None)
    assert issued.private_key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert b"PRIVATE KEY" not in issued.cert_chain_pem
    assert "PRIVATE KEY" not in repr(issued) and "PRIVATE KEY" not in str(issued)
    assert issued.not_before == NOW - timedelta(minutes=1)
    assert issued.not_after == NOW + timedelta(hours=24)
    assert issued.serial == f"{cert.serial_number:x}" and len(issued.serial) == 32
    verify(issued, ca.trust_bundle_pem)
    assert issued == IssuedCert.from_pem(issued.cert_chain_pem, issued.private_key_pem)


def test_leaf_lifetime_capped_by_root_and_max_ttl(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "a", now=NOW, root_ttl=timedelta(hours=2))
    assert ca.issue(WEB, ttl=timedelta(hours=24), now=NOW).not_after == ca.root_not_after
    ca = CertificateAuthority.load_or_create(tmp_path / "b", now=NOW, max_workload_ttl=timedelta(days=7))
    assert ca.issue(WEB, ttl=timedelta(days=30), now=NOW).not_after == NOW + timedelta(days=7)


def test_leaf_serials_differ_and_ids_are_checked(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca", now=NOW)
    serials = {ca.issue(WEB, ttl=timedelta(hours=1), now=NOW).serial for _ in range(5)}
    assert len(serials) == 5
    for bad in ("web", "spiffe://cluster.local/web", "spiffe://cluster.local/ns/a/sa/b c"):
        with pytest.raises(ValueError):
            ca.issue(bad, ttl=timedelta(hours=1), now=NOW)
    # MeshConfig trustDomain changed after the root was generated: still signed, under the same root
    other = ca.issue("spiffe://example.org/ns/shop/sa/web", ttl=timedelta(hours=1), now=NOW)
    verify(other, ca.trust_bundle_pem)


def test_custom_trust_domain(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca", now=NOW, trust_domain="example.org")
    issued = ca.issue("spiffe://example.org/ns/a/sa/b", ttl=timedelta(hours=1), now=NOW)
    verify(issued, ca.trust_bundle_pem)
    root = x509.load_pem_x509_certificate(ca.trust_bundle_pem)
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "example.org"


# --- root rotation ---


def test_rotation_keeps_both_roots_during_the_overlap(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    old_ca = CertificateAuthority.load_or_create(ca_dir, now=NOW)
    old_leaf = old_ca.issue(WEB, ttl=timedelta(hours=24), now=NOW)
    rotated_at = NOW + timedelta(hours=1)
    rotate_root(ca_dir, now=rotated_at)

    new_ca = CertificateAuthority.load_or_create(ca_dir, now=rotated_at, max_workload_ttl=timedelta(days=1))
    bundle = x509.load_pem_x509_certificates(new_ca.trust_bundle_pem)
    old_root = x509.load_pem_x509_certificate(old_ca.trust_bundle_pem)
    assert len(bundle) == 2 and bundle[1] == old_root and bundle[0] != old_root  # current first
    assert (ca_dir / "root-cert.pem").read_bytes() == new_ca.trust_bundle_pem
    assert _mode(ca_dir / "ca-key.pem") == 0o600
    record = json.loads((ca_dir / "previous-roots.json").read_text())["previous_roots"]
    assert [datetime.fromisoformat(e["rotated_at"]) for e in record] == [rotated_at]

    new_leaf = new_ca.issue(WEB, ttl=timedelta(hours=24), now=rotated_at)
    new_root_pem = _pem(bundle[0])
    verify(new_leaf, new_root_pem, now=rotated_at)
    assert not verifies(new_leaf, old_ca.trust_bundle_pem, now=rotated_at)
    verify(old_leaf, new_ca.trust_bundle_pem, now=rotated_at)  # old leaves still trusted
    assert not new_ca.issued_this(old_leaf) and new_ca.issued_this(new_leaf)
    assert new_ca.root_not_after == bundle[0].not_valid_after_utc

    # past rotation time + max workload TTL the old root leaves the bundle (the file keeps it)
    later = rotated_at + timedelta(days=1, seconds=1)
    assert new_ca.trust_bundle(now=later) == new_root_pem
    reloaded = CertificateAuthority.load_or_create(ca_dir, now=later, max_workload_ttl=timedelta(days=1))
    assert reloaded.trust_bundle_pem == new_root_pem


def test_second_rotation_keeps_every_root_in_its_overlap(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    CertificateAuthority.load_or_create(ca_dir, now=NOW)
    rotate_root(ca_dir, now=NOW + timedelta(hours=1))
    rotate_root(ca_dir, now=NOW + timedelta(hours=2))
    ca = CertificateAuthority.load_or_create(ca_dir, now=NOW + timedelta(hours=3))
    assert len(x509.load_pem_x509_certificates(ca.trust_bundle_pem)) == 3
    assert len(json.loads((ca_dir / "previous-roots.json").read_text())["previous_roots"]) == 2


def test_rotating_a_plugged_in_ca_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _plug_in(tmp_path / "ca")
    before = {n: (tmp_path / "ca" / n).read_bytes() for n in CA_FILES}
    with pytest.raises(CaError, match="rotate your CA files yourself"):
        rotate_root(tmp_path / "ca", now=NOW)
    assert main_rotate(tmp_path / "ca") == 1
    assert "rotate your CA files yourself" in capsys.readouterr().err
    assert {n: (tmp_path / "ca" / n).read_bytes() for n in CA_FILES} == before


def test_main_rotate_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca_dir = tmp_path / "ca"
    CertificateAuthority.load_or_create(ca_dir, now=datetime.now(UTC))
    assert main_rotate(ca_dir) == 0
    out = capsys.readouterr().out
    assert "new signing root" in out and "previous root" in out and "2 roots" in out
    assert main_rotate(tmp_path / "empty") == 1


def test_ca_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "ca").write_text("oops")
    with pytest.raises(CaError, match=r"ca: cannot use as a CA directory"):
        CertificateAuthority.load_or_create(tmp_path / "ca", now=NOW)


def test_plugged_in_rsa_root_signing_directly(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corp root")])
    root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    for n in ("ca-cert.pem", "root-cert.pem", "cert-chain.pem"):
        (ca_dir / n).write_bytes(_pem(root))
    (ca_dir / "ca-key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )
    (ca_dir / "ca-key.pem").chmod(0o400)
    ca = CertificateAuthority.load_or_create(ca_dir, now=NOW)
    assert ca.self_signed and ca.root_not_after == NOW + timedelta(days=30)
    verify(ca.issue(WEB, ttl=timedelta(hours=1), now=NOW), _pem(root))
