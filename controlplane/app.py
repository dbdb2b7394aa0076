"""Wires the stages and servers of a running control plane: policy loading, the snapshot cache, the xDS
server and the admin server; reload when policy files change (watch.py), on SIGHUP or POST /debug/reload;
graceful shutdown on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controlplane.api.diagnostics import Diagnostic
from controlplane.api.policyset import PolicySet
from controlplane.gcpolicy import keep_collections_short
from controlplane.isolation import BuildFailures, isolated
from controlplane.model import build_proxy
from controlplane.model.identity import ProxyIdentity, SocketAddress
from controlplane.model.mtls import trust_domain
from controlplane.model.policywide import PolicyWide
from controlplane.ops import metrics
from controlplane.ops.admin import AdminServer
from controlplane.ops.console.history import ChangeLog
from controlplane.ops.policystate import plural, policy_state
from controlplane.policystore import LoadResult, PolicyStore
from controlplane.security.identity import MeshIdentity
from controlplane.security.runtime import load_mesh_identity
from controlplane.translate.resources import Resources
from controlplane.translate.translator import translate_proxy
from controlplane.watch import PolicyWatcher
from controlplane.xds.assembly import Assembly, SharedTranslation, assemble
from controlplane.xds.cache import ResourceFactory, SnapshotCache
from controlplane.xds.server import XdsServer
from controlplane.xds.snapshot import Interner
from controlplane.xds.status import StatusRegistry

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Settings:
    config_dir: Path
    xds_address: str = "127.0.0.1:18000"
    admin_address: str = "127.0.0.1:18001"
    watch: bool = True
    max_connection_age: float | None = None
    # POST /debug/reload from anywhere with `Authorization: Bearer <token>` (ops/admin_guard.py)
    admin_token: str | None = None
    # the mesh CA's state directory (security/ca.py); None: `<config_dir>/../.controlplane-ca`
    ca_dir: Path | None = None
    # serve every xDS stream without checking its credential (experiments only; logged loudly)
    insecure_xds: bool = False
    # TLS on the xDS port with a server certificate from the mesh CA
    xds_tls: bool = False
    workload_cert_ttl: float = 24 * 3600.0


def default_ca_dir(config_dir: Path) -> Path:
    """Beside the policy directory, not in it: the watcher must not see key files, and the policy can be
    committed without them."""
    return config_dir.resolve().parent / ".controlplane-ca"


def make_factory(policy: PolicySet, failures: BuildFailures | None = None,
                 mesh_identity: MeshIdentity | None = None,
                 stage: tuple[PolicyWide, SharedTranslation] | None = None) -> ResourceFactory:
    """The pure pipeline for one proxy shape under `policy`, plus the proxy's own certificate and the
    trust bundle from the mesh CA.

    The policy-wide part is computed once for this policy and shared by every shape (model/policywide.py,
    xds/assembly.py); a shape assembles its snapshot from those pieces plus its own few resources. When
    that fast path raises (an object that cannot be translated), the shape is built by the full-rebuild
    reference path under failure isolation (isolation.py): the object is left out of the shape and
    recorded in `failures`."""
    domain = trust_domain(policy)
    failed = failures if failures is not None else BuildFailures()
    wide, shared = stage if stage is not None else (PolicyWide(policy), SharedTranslation())

    def timed(current: PolicySet, identity: ProxyIdentity) -> Resources:
        started = time.perf_counter()
        model = build_proxy(current, identity)
        built = time.perf_counter()
        resources = translate_proxy(model)
        metrics.BUILD_SECONDS.observe(built - started)
        metrics.TRANSLATE_SECONDS.observe(time.perf_counter() - built)
        return resources

    def own_extras(resources: Resources, identity: ProxyIdentity) -> None:
        if mesh_identity is not None:
            for type_url, name, message in mesh_identity.secrets(identity, domain):
                resources.add(type_url, name, message)

    def assembled(identity: ProxyIdentity) -> Assembly | None:
        started = time.perf_counter()
        try:
            made = assemble(wide, shared, identity)
            if made is not None:
                own_extras(made.own, identity)
        except Exception:  # the reference path below finds (and leaves out) the object responsible
            return None
        if made is None or made.collisions():
            return None
        metrics.BUILD_SECONDS.observe(time.perf_counter() - started)
        return made

    def resources_for(identity: ProxyIdentity) -> Resources | Assembly:
        made = assembled(identity)
        if made is not None:
            return made
        resources = isolated(policy, identity, failed, timed)
        own_extras(resources, identity)
        return resources

    return resources_for


def _warm(stage: tuple[PolicyWide, SharedTranslation], identity: ProxyIdentity,
          interner: Interner | None = None) -> None:
    """Compute the policy-wide part for one shape ahead of `publish` (any failure: the factory's
    reference path handles it). With the cache's `interner` (only in the snapshot worker, which owns
    it), the shared parts are serialized and interned too."""
    try:
        made = assemble(*stage, identity)
        if made is not None and interner is not None:
            made.snapshot(interner)
    except Exception:
        log.debug("warming the policy-wide stage for %s failed", identity.describe(), exc_info=True)


class ControlPlane:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = StatusRegistry()
        self.store = PolicyStore(settings.config_dir)
        self.policy = PolicySet()
        self.diagnostics: list[Diagnostic] = []
        # objects left out of some proxy's configuration because they could not be built (isolation.py)
        self.build_failures = BuildFailures()
        self.mesh = load_mesh_identity(settings.ca_dir or default_ca_dir(settings.config_dir),
                                       timedelta(seconds=settings.workload_cert_ttl))
        self.cache = SnapshotCache(make_factory(self.policy, mesh_identity=self.mesh.identity))
        self.changes = ChangeLog()  # the web console's history of reloads
        self.loaded: LoadResult | None = None  # the last load: which files' edits are not served
        self._loaded = False
        self.registry.describe_identity = lambda status: self.mesh.identity.describe(
            status, trust_domain(self.policy))
        authenticator = None if settings.insecure_xds else self.mesh.authenticator(
            lambda: trust_domain(self.policy))
        if settings.insecure_xds:
            log.warning("INSECURE: --insecure-xds serves configuration and workload keys to any client that "
                        "reaches %s, without checking who it is", settings.xds_address)
        credentials = self.mesh.server_credentials(settings.xds_address) if settings.xds_tls else None
        self.xds = XdsServer(self.cache, self.registry, settings.xds_address, settings.max_connection_age,
                             authenticator=authenticator, credentials=credentials)
        admin = SocketAddress.parse(settings.admin_address)
        self.admin = AdminServer(self, admin.host, admin.port, settings.admin_token)
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._background: set[asyncio.Future[Any]] = set()
        # the startup load's warm-up, held until the servers listen (see `start`)
        self._warm_after_start: Callable[[], None] | None = None
        self._serving = False
        self.watcher: PolicyWatcher | None = None
        self._stage: tuple[PolicyWide, SharedTranslation] | None = None

    @property
    def ready(self) -> bool:
        return self._loaded

    async def reload(self, changed_at: float | None = None) -> dict[str, Any]:
        """Load the policy directory and rebuild every live proxy shape. A file with errors is reported and
        not applied (its last valid version stays in effect, see policystore.py). `changed_at`
        (time.monotonic()) is when the change was first seen, for the convergence metric. Reloads run one
        at a time (the watcher, SIGHUP and the admin endpoint may ask at once)."""
        async with self._reload_lock:
            return await self._reload(changed_at)

    async def _reload(self, changed_at: float | None) -> dict[str, Any]:
        started = time.perf_counter()
        changed_at = time.monotonic() if changed_at is None else changed_at
        # Parsing and validating a big policy takes seconds: off the event loop, so /healthz, /readyz and
        # every xDS stream keep answering meanwhile (reloads are serialized by the lock above).
        loaded = await asyncio.to_thread(self.store.load)
        policy, diagnostics = loaded.policy, loaded.diagnostics
        for diagnostic in diagnostics:
            if diagnostic.is_error:
                log.error("invalid policy: %s", diagnostic)
            else:  # applied anyway (api/diagnostics.py: severities)
                log.warning("policy: %s", diagnostic)
        self.policy, self.diagnostics, self.loaded = policy, diagnostics, loaded
        self.build_failures = failures = BuildFailures()
        rebuilding = time.perf_counter()
        before = self.changes.before(self.cache)
        # the previous generation lends every service whose inputs are the same objects (model/carry.py)
        # and every translated part whose model value is unchanged (xds/assembly.py)
        previous = self._stage
        stage = (PolicyWide(policy, previous[0] if previous else None),
                 SharedTranslation(previous[1] if previous else None))
        live = next(iter(self.cache.shapes()), None)
        if live is not None:
            # The first shape of a new policy computes the policy-wide part (about a second at 1,000
            # services): in a thread (the pure stages only, no secrets), so the event loop keeps serving
            # ACKs and health checks meanwhile; `publish` then assembles every shape in milliseconds.
            await asyncio.to_thread(_warm, stage, live)
        else:
            # No proxy yet (startup, or every proxy gone): warm the policy-wide part for a plain sidecar
            # in the snapshot worker, in the background. The first proxy's build queues behind it in that
            # same thread and then costs its own few milliseconds, not the whole policy-wide part.
            warm = functools.partial(_warm, stage, ProxyIdentity(), self.cache.interner)
            if self._serving:
                self._spawn(self.cache.in_worker(warm))
            else:
                self._warm_after_start = warm
        self._stage = stage  # certificate renewals reuse it (same policy)
        factory = make_factory(policy, failures, self.mesh.identity, stage)
        changed = await self.cache.publish(factory, changed_at)
        stage[0].settle()  # every live shape is built: the previous generation has lent what it could
        stage[1].settle()
        await self.changes.after(self.cache, self.registry, before, self.store.loaded_fingerprint,
                                       loaded)
        diagnostics = self.all_diagnostics()
        metrics.REBUILD_SECONDS.observe(time.perf_counter() - rebuilding)
        elapsed = time.perf_counter() - started
        metrics.RELOADS.labels("invalid" if any(d.is_error for d in diagnostics) else "ok").inc()
        metrics.DIAGNOSTICS.set(len(diagnostics))
        self._loaded = True
        log.info("loaded %s: %s, %s, %s changed (%.1f ms)", self.settings.config_dir,
                 plural(len(policy), "object"), plural(len(diagnostics), "problem"),
                 plural(changed, "proxy shape"), elapsed * 1000)
        return {"objects": len(policy), "diagnostics": [str(d) for d in diagnostics],
                "kept_last_valid": loaded.kept, "not_applied": loaded.excluded, "changed_shapes": changed}

    def all_diagnostics(self) -> list[Diagnostic]:
        """The policy's diagnostics plus the objects left out because they could not be built."""
        return sorted(self.diagnostics + self.build_failures.diagnostics())

    def policy_report(self) -> dict[str, Any]:
        return {
            "config_dir": str(self.settings.config_dir),
            "reload_pending": (self.watcher is not None and self.watcher.pending)
            or (self.settings.watch and self.store.fingerprint() != self.store.loaded_fingerprint),
            "objects": [str(obj.key) for obj in self.policy],
            "diagnostics": [str(d) for d in self.all_diagnostics()],
            **policy_state(self.all_diagnostics(), self.loaded),
            "shapes": {identity.describe(): {"version": snap.version, "streams": streams}
                       for identity, (snap, streams) in self.cache.shapes().items()},
        }

    async def start(self) -> None:
        await self.reload()
        await self.xds.start()
        await self.admin.start()
        # The startup load's warm-up (seconds at 5,000 services) starts once both servers listen: begun
        # before, it held the GIL while they started, which put /readyz ~0.3-0.8 s later (bench/startup.py).
        self._serving = True
        warm, self._warm_after_start = self._warm_after_start, None
        if warm is not None:
            self._spawn(self.cache.in_worker(warm))

    def _reload_soon(self) -> None:
        self._spawn(self.reload())

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)  # keep a reference until done (the loop holds tasks weakly)
        task.add_done_callback(self._background.discard)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT; SIGHUP reloads the policy directory."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon)
        await self.start()
        renewing = asyncio.create_task(self._renew_certificates())
        self._background.add(renewing)
        collecting = asyncio.create_task(keep_collections_short())
        self._background.add(collecting)
        watcher = PolicyWatcher(self.settings.config_dir, self.reload) if self.settings.watch else None
        self.watcher = watcher
        watching = asyncio.create_task(watcher.run()) if watcher else None
        try:
            await self._stop.wait()
        finally:
            log.info("shutting down")
            renewing.cancel()
            collecting.cancel()
            if watcher is not None and watching is not None:
                watcher.stop()
                await asyncio.gather(watching, return_exceptions=True)
            await self.close()

    async def _renew_certificates(self) -> None:
        """Renew workload certificates at half life (with jitter) and push them: only the shapes whose
        `default` secret changed get new versions."""
        while True:
            due = self.mesh.certs.next_renewal()
            # Nothing issued yet: look again soon, since certificates are issued when proxies connect (a
            # long sleep here let the first short-lived certificates expire unrenewed). Else: wake when
            # the first is due, at least once a minute.
            wait = 1.0 if due is None else (due - datetime.now(UTC)).total_seconds()
            await asyncio.sleep(min(max(wait, 0.05), 60.0 if due is not None else 1.0))
            # key generation and the file writes: off the event loop
            renewed = await self.cache.in_worker(lambda: self.mesh.certs.renew_due(now=datetime.now(UTC)))
            if renewed:
                log.info("renewed %d workload certificate(s): %s", len(renewed), ", ".join(renewed))
                async with self._reload_lock:
                    await self.cache.publish(make_factory(self.policy, self.build_failures,
                                                          self.mesh.identity, self._stage))
            self.mesh.update_metrics()

    async def close(self) -> None:
        await self.admin.close()
        await self.xds.close()
        # certificates issued last are written in a thread: on disk before a restart looks for them
        await asyncio.to_thread(self.mesh.certs.flush)
