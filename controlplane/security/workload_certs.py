"""Workload certificates held by the control plane: issued on first need, re-used, renewed at half life.

Re-use is the point: `current()` returns the very same IssuedCert (same bytes) until the certificate's
renewal time, and the certificates and keys are kept under `state_dir/issued/` (mode 0600, one file per
identity, named by a hash of the SPIFFE ID), so a restarted control plane with the same CA directory
serves the same bytes. xDS versions are content hashes, so a proxy that reconnects after a restart gets
nothing re-sent. A stored certificate is ignored (and replaced) when it is unparsable, expired, past its
renewal time, longer-lived than the configured TTL, or not signed by the current signing CA (after a root
rotation).

Renewal at half life with jitter, as Istio's agent (SECRET_GRACE_PERIOD_RATIO 0.5, jitter 0.01): renew_at
= issued + lifetime * (0.5 + j), j in [-0.05, 0.05], where issued = not_before + 1 min and lifetime =
not_after - issued. The life is counted from the issue time, not from not_before, because not_before is
backdated a minute for clock skew: with short certificates (the tests' 20 s) half of the backdated life
is over before the certificate is even issued, and every renewal would be due at once, forever.
Istio's agents each draw their jitter at random;
ours are all renewed by one process, so a wider spread (±5% of the life, ±72 min for 24h certificates)
keeps a mesh whose certificates were issued in one burst (a control-plane start) from renewing them all
in the same push. j is derived from the serial (a hash of it), not drawn at random, so a restarted control
plane and every replica agree on when a given certificate renews.

Replicas sharing a state directory each issue their own certificates (the last write of a file wins);
what a proxy receives stays consistent because it gets all its secrets from the replica it is connected to.

Thread safety: snapshots (and so certificates) are built in the snapshot cache's worker thread while the
event loop reads renewal times; a lock guards the held certificates. Issuing (key generation, the file
write) happens outside the lock, so a reader on the loop never waits for it. With a `writer` executor
(the server's, security/runtime.py) the files are written in order in that thread: a file write with its
fsync took longer than the rest of a new shape's snapshot, and the file only matters after a restart
(pending writes finish when the process exits; `flush()` waits for them).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Collection
from concurrent.futures import Executor, Future
from datetime import datetime, timedelta
from pathlib import Path

from controlplane.security.ca import CLOCK_SKEW, CertificateAuthority, IssuedCert
from controlplane.security.files import PRIVATE_FILE_MODE, ensure_private_dir, require_utc, write_atomic

log = logging.getLogger(__name__)

RENEW_RATIO = 0.5
JITTER = 0.05
ISSUED_DIR = "issued"


def jitter_of(serial: str) -> float:
    """A number in [-JITTER, JITTER) that depends only on the serial."""
    digest = hashlib.sha256(serial.encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64  # [0, 1)
    return (unit * 2 - 1) * JITTER


class CertStore:
    """The workload certificates of the proxies a control plane serves, one per SPIFFE ID."""

    def __init__(self, ca: CertificateAuthority, *, ttl: timedelta, state_dir: Path | None,
                 writer: Executor | None = None) -> None:
        if ttl <= timedelta(0):
            raise ValueError(f"workload certificate ttl must be positive, got {ttl}")
        self._ca = ca
        self._ttl = ttl
        self._dir = state_dir / ISSUED_DIR if state_dir is not None else None
        self._held: dict[str, IssuedCert] = {}
        self._issued = 0
        self._lock = threading.Lock()
        self._writer = writer
        self._writes: set[Future[None]] = set()
        # names of the files in the state directory, listed once on first use and kept up to date by
        # this store: a new identity's lookup is then a set lookup, not a stat (which, with the writer
        # thread and gRPC's threads wanting the GIL back, cost ~0.7 ms per new proxy in a connect storm)
        self._stored: set[str] | None = None

    def _store(self, work: Callable[[], None]) -> None:
        """Change the state directory now, or in order in the writer thread."""
        if self._writer is None:
            work()
            return
        done = self._writer.submit(work)
        with self._lock:
            self._writes.add(done)
        done.add_done_callback(self._written)

    def _written(self, done: Future[None]) -> None:
        with self._lock:
            self._writes.discard(done)
        if done.exception() is not None:
            log.warning("storing workload certificates failed", exc_info=done.exception())

    def flush(self) -> None:
        """Wait until every certificate issued so far is in the state directory."""
        with self._lock:
            pending = list(self._writes)
        for done in pending:
            done.result()

    def _held_now(self) -> list[IssuedCert]:
        with self._lock:
            return list(self._held.values())

    def current(self, spiffe_id: str, *, now: datetime) -> IssuedCert:
        """A valid certificate for `spiffe_id`: the one held (or stored) until its renewal time, else new."""
        now = require_utc(now)
        with self._lock:
            held = self._held.get(spiffe_id)
        if held is not None and self._fresh(held, now):
            return held
        stored = self._read(spiffe_id)
        if stored is not None and self._fresh(stored, now) and self._ca.issued_this(stored):
            with self._lock:
                self._held[spiffe_id] = stored
            return stored
        return self._issue(spiffe_id, now)

    def renew_at(self, cert: IssuedCert) -> datetime:
        """When `cert` is replaced: half its life from issue, ±5% of the life derived from its serial."""
        issued = cert.not_before + CLOCK_SKEW
        lifetime = cert.not_after - issued
        return issued + lifetime * (RENEW_RATIO + jitter_of(cert.serial))

    def next_renewal(self) -> datetime | None:
        """The soonest renewal time of the certificates held (None if none is held)."""
        return min((self.renew_at(c) for c in self._held_now()), default=None)

    def renew_due(self, *, now: datetime) -> list[str]:
        """Reissue every held certificate whose renewal time has come; their SPIFFE IDs, sorted."""
        now = require_utc(now)
        with self._lock:
            held = list(self._held.items())
        due = sorted(i for i, c in held if not self._fresh(c, now))
        for spiffe_id in due:
            self._issue(spiffe_id, now)
        return due

    def issued_total(self) -> int:
        """Certificates this store has issued (not counting ones re-used from the state directory)."""
        return self._issued

    def soonest_expiry(self) -> datetime | None:
        """The earliest not_after of the certificates held (None if none is held)."""
        return min((c.not_after for c in self._held_now()), default=None)

    def forget_except(self, spiffe_ids: Collection[str]) -> None:
        """Drop held certificates (and their stored files) of identities not in `spiffe_ids`.

        Only certificates held by this process are dropped: files of identities this process has not
        served yet stay, so proxies that reconnect after a restart still find theirs."""
        keep = set(spiffe_ids)
        with self._lock:
            gone = [i for i in self._held if i not in keep]
            for spiffe_id in gone:
                del self._held[spiffe_id]
        for spiffe_id in gone:
            path = self._path(spiffe_id)
            if path is not None:
                self._stored_names().discard(path.name)
                self._store(functools.partial(_unlink, path))

    def _fresh(self, cert: IssuedCert, now: datetime) -> bool:
        # a certificate longer-lived than the configured TTL is replaced (the TTL was lowered)
        longest = self._ttl + CLOCK_SKEW + timedelta(seconds=1)
        return cert.not_before <= now < self.renew_at(cert) and cert.not_after - cert.not_before <= longest

    def _issue(self, spiffe_id: str, now: datetime) -> IssuedCert:
        cert = self._ca.issue(spiffe_id, ttl=self._ttl, now=now)
        with self._lock:
            self._issued += 1
            self._held[spiffe_id] = cert
        self._store(lambda: self._write(cert))
        return cert

    def _path(self, spiffe_id: str) -> Path | None:
        if self._dir is None:
            return None
        return self._dir / f"{hashlib.sha256(spiffe_id.encode()).hexdigest()[:32]}.json"

    def _stored_names(self) -> set[str]:
        with self._lock:
            if self._stored is None:
                assert self._dir is not None
                try:
                    self._stored = {entry.name for entry in os.scandir(self._dir)}
                except OSError:  # not there yet (created on the first write), or unreadable
                    self._stored = set()
            return self._stored

    def _read(self, spiffe_id: str) -> IssuedCert | None:
        path = self._path(spiffe_id)
        if path is None or path.name not in self._stored_names():
            return None
        try:
            record = json.loads(path.read_text())
            cert = IssuedCert.from_pem(record["cert_chain_pem"].encode(), record["private_key_pem"].encode())
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("ignoring stored certificate %s for %s: %s", path, spiffe_id, e)
            return None
        return cert if cert.spiffe_id == spiffe_id else None

    def _write(self, cert: IssuedCert) -> None:
        path = self._path(cert.spiffe_id)
        if path is None:
            return
        record = {
            "spiffe_id": cert.spiffe_id,
            "cert_chain_pem": cert.cert_chain_pem.decode(),
            "private_key_pem": cert.private_key_pem.decode(),
        }
        try:
            ensure_private_dir(path.parent)
            write_atomic(path, json.dumps(record).encode(), mode=PRIVATE_FILE_MODE)
            self._stored_names().add(path.name)
        except OSError as e:
            # the certificate is still served from memory; only re-use across a restart is lost
            log.warning("cannot store the certificate of %s in %s: %s", cert.spiffe_id, path, e)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
