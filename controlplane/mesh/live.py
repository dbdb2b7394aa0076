"""Follows edits of the policy directory while the local mesh runs: an instance the policy gains (a new
service, another endpoint, a `mesh scale`) gets its app and sidecar Envoy started; an instance it loses is
stopped — but only after it has left every Envoy's endpoint set (deregistration first, as Kuma users
learned the hard way: a dead endpoint that keeps getting traffic is the worst failure of a mesh).

Edits with policy problems change no process: the control plane keeps serving the last valid version of
that file, and so does the mesh.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from controlplane.api.loader import load_policy_dir, policy_files
from controlplane.mesh.plan import Instance, MeshPlan, PlanError, Ports, Proxy, local_only, make_plan
from controlplane.mesh.processes import MeshError, http_get, port_in_use, stop_all, wait_ready
from controlplane.ops import inspect

if TYPE_CHECKING:
    from controlplane.mesh.runner import LocalMesh

DEREGISTER_TIMEOUT = 20.0
CHECK_EVERY = 1.0


def listening(instance: Instance) -> Callable[[], bool]:
    addresses = [str(a) for a in instance.binds]
    return lambda: all(http_get(address, "/")[0] == 200 for address in addresses)


def envoy_live(proxy: Proxy) -> Callable[[], bool]:
    # LIVE once the initial xDS fetch is done (Envoy's init manager), so it has its first config
    return lambda: http_get(str(proxy.admin), "/ready") == (200, b"LIVE\n")


def fingerprint(root: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime, size) of every policy file."""
    found = []
    for path in policy_files(root) if root.is_dir() else []:
        try:
            stat = path.stat()
        except OSError:
            continue
        found.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(found)


def changes(old: MeshPlan, new: MeshPlan) -> tuple[list[Instance], list[Instance]]:
    """(instances to start, instances to stop): an instance whose addresses, labels or sidecar changed is
    both (restarted as the new one)."""
    before = {i.instance_id: i for i in old.instances}
    after = {i.instance_id: i for i in new.instances}
    changed = {
        key
        for key in before.keys() & after.keys()
        if before[key] != after[key] or old.sidecar_of(before[key]) != new.sidecar_of(after[key])
    }
    added = [i for key, i in after.items() if key not in before or key in changed]
    removed = [i for key, i in before.items() if key not in after or key in changed]
    return added, removed


class PolicyFollower:
    """`poll()` from the runner's loop: re-plans when a policy file changed and applies the difference."""

    def __init__(
        self, mesh: LocalMesh, log: Callable[[str], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.mesh = mesh
        self.log = log
        self.clock = clock
        self._seen = fingerprint(mesh.settings.config_dir)
        self._next_check = clock() + CHECK_EVERY

    def poll(self) -> None:
        if self.clock() < self._next_check:
            return
        self._next_check = self.clock() + CHECK_EVERY
        now = fingerprint(self.mesh.settings.config_dir)
        if now == self._seen:
            return
        self._seen = now
        plan = self.replan()
        if plan is not None:
            self.apply(plan)

    def replan(self) -> MeshPlan | None:
        mesh = self.mesh
        policy, diagnostics = load_policy_dir(mesh.settings.config_dir)
        if diagnostics:
            self.log(f"policy has {len(diagnostics)} problem(s); the mesh's processes stay as they are "
                     f"(first: {diagnostics[0]})")
            return None
        ports = Ports(mesh.settings.proxy_port_base, assigned=mesh.ports.assigned)
        try:
            plan = local_only(make_plan(policy, ports), policy)
        except PlanError as exc:
            self.log(f"policy change not applied to the mesh: {exc}")
            return None
        mesh.ports = ports
        return plan

    def apply(self, plan: MeshPlan) -> None:
        mesh = self.mesh
        added, removed = changes(mesh.plan, plan)
        if removed:
            self._deregister(removed, plan)
            for instance in removed:
                self._stop(instance)
        mesh.plan = plan
        for instance in added:
            self._start(instance)
        if added or removed:
            mesh.save_ports()
            mesh.write_state()

    def _deregister(self, removed: list[Instance], plan: MeshPlan) -> None:
        """Wait until the control plane has loaded the edit and every remaining Envoy ACKed it: then none
        of them sends traffic to the removed endpoints any more."""
        mesh = self.mesh
        names = ", ".join(i.instance_id for i in removed)
        remaining = {p.node_id for p in plan.proxies}
        deadline = self.clock() + DEREGISTER_TIMEOUT
        while True:
            try:
                report = inspect.fetch(str(mesh.admin), "/debug/config")
                streams = inspect.fetch(str(mesh.admin), "/debug/syncz")
                streams = [s for s in streams if s["node"] in remaining]
                done = not report.get("reload_pending") and bool(streams) and inspect.all_synced(streams)
            except inspect.AdminError:
                done = False
            if done:
                self.log(f"deregistered {names}: every Envoy has ACKed the config without them")
                return
            if self.clock() >= deadline:
                self.log(f"{names}: not every Envoy ACKed the config without them within "
                         f"{DEREGISTER_TIMEOUT:g}s; stopping them anyway")
                return
            time.sleep(0.1)

    def _stop(self, instance: Instance) -> None:
        mesh = self.mesh
        names = {f"envoy-{instance.instance_id}", f"service-{instance.instance_id}"}
        going = [p for p in mesh.processes if p.name in names]
        for process in going:
            mesh.processes.remove(process)  # the supervisor must not restart them
        stop_all(going)  # Envoy first: it was spawned after the app
        pids = ", ".join(f"{p.name} pid {p.pid}" for p in going)
        self.log(f"stopped {instance.instance_id} ({pids})")

    def _start(self, instance: Instance) -> None:
        mesh = self.mesh
        sidecar = mesh.plan.sidecar_of(instance)
        claims = [*instance.listen, *instance.app_listen, sidecar.admin]
        claims += [sidecar.outbound] if sidecar.outbound is not None else []
        busy = [a for a in claims if port_in_use(a.host, a.port)]
        if busy:
            self.log(f"cannot start {instance.instance_id}: {', '.join(map(str, busy))} already in use")
            return
        try:
            app = mesh.start_service(instance)
            wait_ready({app: listening(instance)}, mesh.settings.start_timeout)
            envoy = mesh.start_envoy(sidecar)
            wait_ready({envoy: envoy_live(sidecar)}, mesh.settings.start_timeout)
        except MeshError as exc:
            self.log(f"{instance.instance_id} failed to start (the supervisor retries): {exc}")
            return
        self.log(f"started {instance.instance_id} (app {', '.join(map(str, instance.binds))}, "
                 f"sidecar admin http://{sidecar.admin}, pids {app.pid} {envoy.pid})")
