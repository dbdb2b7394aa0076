"""CertStore: the same certificate bytes until renewal (also across a restart with the same state dir),
jittered half-life renewal, renew_due/next_renewal/soonest_expiry, forget_except, and stored certificates
that must not be re-used (corrupt, expired, longer than the TTL, signed by a rotated-away root)."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from controlplane.security.ca import CertificateAuthority, IssuedCert
from controlplane.security.rotation import rotate_root
from controlplane.security.workload_certs import CertStore, jitter_of

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(hours=24)
WEB = "spiffe://cluster.local/ns/shop/sa/web"
API = "spiffe://cluster.local/ns/shop/sa/api"


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "ca", now=NOW)


def _files(state: Path) -> list[Path]:
    return sorted((state / "issued").glob("*.json"))


def _chains_to(cert: IssuedCert, ca: CertificateAuthority) -> bool:
    leaf = x509.load_pem_x509_certificates(cert.cert_chain_pem)[0]
    root = x509.load_pem_x509_certificate(ca.trust_bundle_pem)
    try:
        leaf.verify_directly_issued_by(root)
    except Exception:
        return False
    return True


def test_same_bytes_until_renewal_and_across_restart(ca: CertificateAuthority, tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = CertStore(ca, ttl=TTL, state_dir=state)
    first = store.current(WEB, now=NOW)
    assert store.current(WEB, now=NOW + timedelta(hours=10)) is first
    assert store.issued_total() == 1
    [path] = _files(state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "issued").stat().st_mode) == 0o700
    assert WEB.encode() not in path.name.encode()  # named by a hash

    # a restarted control plane: new CA object from the same dir, new store on the same state dir
    ca2 = CertificateAuthority.load_or_create(tmp_path / "ca", now=NOW + timedelta(hours=1))
    restarted = CertStore(ca2, ttl=TTL, state_dir=state)
    again = restarted.current(WEB, now=NOW + timedelta(hours=1))
    assert again == first  # byte-identical chain and key, same serial and times
    assert again.cert_chain_pem == first.cert_chain_pem and again.private_key_pem == first.private_key_pem
    assert restarted.issued_total() == 0

    # without a state dir nothing is re-used
    assert CertStore(ca2, ttl=TTL, state_dir=None).current(WEB, now=NOW).serial != first.serial


def test_renewal_at_half_life_with_deterministic_jitter(ca: CertificateAuthority) -> None:
    store = CertStore(ca, ttl=TTL, state_dir=None)
    cert = store.current(WEB, now=NOW)
    life = cert.not_after - NOW  # counted from the issue time, not the backdated not_before
    renew = store.renew_at(cert)
    assert NOW + life * 0.45 <= renew <= NOW + life * 0.55
    assert renew == NOW + life * (0.5 + jitter_of(cert.serial))
    assert CertStore(ca, ttl=TTL, state_dir=None).renew_at(cert) == renew  # replicas agree
    # the jitter spreads: 40 serials give many distinct offsets within ±5%
    jitters = [jitter_of(f"{i:032x}") for i in range(40)]
    assert all(-0.05 <= j < 0.05 for j in jitters)
    assert max(jitters) - min(jitters) > 0.05

    assert store.current(WEB, now=renew - timedelta(seconds=1)) is cert
    renewed = store.current(WEB, now=renew)
    assert renewed.serial != cert.serial and store.issued_total() == 2
    assert renewed.not_before == (renew - timedelta(minutes=1)).replace(microsecond=0)


def test_short_certificates_are_not_due_when_issued(ca: CertificateAuthority) -> None:
    # 20 s certificates (the rotation e2e test's): half of the backdated life (80 s) would be over at issue
    store = CertStore(ca, ttl=timedelta(seconds=20), state_dir=None)
    cert = store.current(WEB, now=NOW)
    assert NOW + timedelta(seconds=9) <= store.renew_at(cert) <= NOW + timedelta(seconds=11)
    assert store.renew_due(now=NOW) == []
    assert store.current(WEB, now=NOW + timedelta(seconds=8)) is cert
    assert store.renew_due(now=NOW + timedelta(seconds=11)) == [WEB]
    assert store.issued_total() == 2


def test_renew_due_next_renewal_and_soonest_expiry(ca: CertificateAuthority) -> None:
    store = CertStore(ca, ttl=TTL, state_dir=None)
    assert store.next_renewal() is None and store.soonest_expiry() is None
    assert store.renew_due(now=NOW) == []
    web = store.current(WEB, now=NOW)
    api = store.current(API, now=NOW + timedelta(hours=3))  # renews after web whatever the jitter
    assert store.next_renewal() == store.renew_at(web)
    assert store.soonest_expiry() == web.not_after

    assert store.renew_due(now=store.renew_at(web) - timedelta(seconds=1)) == []
    assert store.renew_due(now=store.renew_at(web)) == [WEB]
    assert store.current(WEB, now=store.renew_at(web)).serial != web.serial
    assert store.current(API, now=store.renew_at(web)) is api
    assert store.soonest_expiry() == api.not_after
    assert store.issued_total() == 3
    later = NOW + timedelta(days=2)
    assert store.renew_due(now=later) == [API, WEB]


def test_forget_except_drops_memory_and_file(ca: CertificateAuthority, tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = CertStore(ca, ttl=TTL, state_dir=state)
    web = store.current(WEB, now=NOW)
    api = store.current(API, now=NOW)
    assert len(_files(state)) == 2
    store.forget_except([API])
    assert len(_files(state)) == 1
    assert store.soonest_expiry() == api.not_after
    assert store.renew_due(now=NOW + timedelta(days=2)) == [API]  # WEB is no longer held
    assert store.current(WEB, now=NOW).serial != web.serial  # and is issued anew when needed again


def test_stored_certificates_that_must_not_be_reused(ca: CertificateAuthority, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = CertStore(ca, ttl=TTL, state_dir=state).current(WEB, now=NOW)
    [path] = _files(state)

    # past its renewal time (a control plane down for a day)
    late = CertStore(ca, ttl=TTL, state_dir=state)
    replaced = late.current(WEB, now=NOW + timedelta(hours=14))
    assert replaced.serial != first.serial and late.issued_total() == 1
    # the replacement was stored and is what the next restart gets
    assert CertStore(ca, ttl=TTL, state_dir=state).current(WEB, now=NOW + timedelta(hours=15)) == replaced

    # corrupt file
    path.write_text("{not json")
    corrupt = CertStore(ca, ttl=TTL, state_dir=state)
    assert corrupt.current(WEB, now=NOW + timedelta(hours=15)).serial != replaced.serial
    assert corrupt.issued_total() == 1

    # empty (a truncated file)
    path.write_text("")
    emptied = CertStore(ca, ttl=TTL, state_dir=state)
    assert emptied.current(WEB, now=NOW + timedelta(hours=15)).serial != replaced.serial
    assert emptied.issued_total() == 1

    # TTL lowered below the stored certificate's lifetime
    stored = CertStore(ca, ttl=TTL, state_dir=state).current(WEB, now=NOW + timedelta(hours=15))
    short = CertStore(ca, ttl=timedelta(minutes=20), state_dir=state)
    shorter = short.current(WEB, now=NOW + timedelta(hours=15))
    assert shorter.serial != stored.serial and shorter.not_after == NOW + timedelta(hours=15, minutes=20)


def test_stored_certificate_from_before_a_root_rotation_is_replaced(tmp_path: Path) -> None:
    ca_dir, state = tmp_path / "ca", tmp_path / "state"
    old_ca = CertificateAuthority.load_or_create(ca_dir, now=NOW)
    old = CertStore(old_ca, ttl=TTL, state_dir=state).current(WEB, now=NOW)
    rotate_root(ca_dir, now=NOW + timedelta(minutes=5))
    new_ca = CertificateAuthority.load_or_create(ca_dir, now=NOW + timedelta(minutes=6))
    store = CertStore(new_ca, ttl=TTL, state_dir=state)
    new = store.current(WEB, now=NOW + timedelta(minutes=6))
    assert new.serial != old.serial and store.issued_total() == 1
    assert _chains_to(new, new_ca) and not _chains_to(old, new_ca)


def test_invalid_ttl(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError):
        CertStore(ca, ttl=timedelta(0), state_dir=None)


def test_a_writer_thread_stores_certificates_in_order(ca: CertificateAuthority, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    state = tmp_path / "state"
    with ThreadPoolExecutor(max_workers=1) as writer:
        store = CertStore(ca, ttl=TTL, state_dir=state, writer=writer)
        first = store.current(WEB, now=NOW)
        store.current(API, now=NOW)
        store.forget_except([API])  # WEB's file is removed after it was written, not before
        store.flush()
        assert len(_files(state)) == 1
        again = CertStore(ca, ttl=TTL, state_dir=state)
        assert again.current(API, now=NOW) == store.current(API, now=NOW)
        assert again.current(WEB, now=NOW).serial != first.serial
