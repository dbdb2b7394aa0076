"""Brings a local mesh up and down: the control plane, then every demo service instance, then every Envoy
(gateways and sidecars), each waited for until ready; `stop()` stops them all by PID in reverse order.

`LocalMesh.start()` either returns with everything ready or raises MeshError naming the process that failed
and the last lines of its log, after stopping everything it had started. `make run` (__main__.py) and the
e2e tests both go through here.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from controlplane.api.loader import load_policy_dir
from controlplane.bootstrap import BootstrapSettings, bootstrap_yaml
from controlplane.mesh.live import PolicyFollower, envoy_live, listening
from controlplane.mesh.plan import LOOPBACK, Instance, MeshPlan, Ports, Proxy, local_only, make_plan
from controlplane.mesh.processes import (
    MeshError,
    Process,
    http_get,
    port_in_use,
    stop_all,
    wait_ready,
)
from controlplane.mesh.supervisor import Supervisor
from controlplane.mesh.traces import where_traces_go
from controlplane.model.identity import Role, SocketAddress
from controlplane.ops import inspect
from controlplane.security.tokens import TokenAuthority

STATE_FILE = "mesh.json"
PORTS_FILE = "ports.json"  # next to the log directory: run/ports.json
PREVIOUS = "prev"  # the previous run's logs, kept for one run (a failed run's logs are what one needs)


def load_ports(path: Path | None) -> dict[str, int]:
    """The port assignment of earlier runs ({} when there is none or it is unreadable)."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, int) and 0 < v < 65536}


def save_ports(path: Path | None, ports: Ports) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(sorted(ports.assigned.items())), indent=2) + "\n")


def keep_previous_logs(log_dir: Path) -> None:
    """Move the last run's logs, state and bootstraps to `log_dir/prev/` (replacing the older ones)."""
    if not log_dir.is_dir():
        return
    old = [p for p in log_dir.iterdir() if p.suffix == ".log" or p.name in (STATE_FILE, "bootstrap")]
    if not old:
        return
    previous = log_dir / PREVIOUS
    shutil.rmtree(previous, ignore_errors=True)
    previous.mkdir()
    for path in old:
        path.rename(previous / path.name)


@dataclass(frozen=True)
class MeshSettings:
    config_dir: Path
    log_dir: Path
    xds_port: int = 18000  # 0: chosen by the OS (as every port below)
    admin_port: int = 18001
    proxy_port_base: int = 15000  # Envoy admin and outbound ports count up from here
    envoy_bin: str | None = None  # default: $ENVOY_BIN, else `envoy` next to this Python, else on PATH
    delta: bool = True
    start_timeout: float = 30.0
    # the mesh CA (certificates and proxy tokens); None: `ca/` beside the log directory (run/ca)
    ca_dir: Path | None = None

    @property
    def mesh_ca_dir(self) -> Path:
        return self.ca_dir or self.log_dir.parent / "ca"


def find_envoy(configured: str | None = None) -> str:
    binary = configured or os.environ.get("ENVOY_BIN")
    if binary:
        return binary
    here = os.path.dirname(os.path.abspath(sys.executable))
    found = shutil.which("envoy", path=os.pathsep.join([here, os.environ.get("PATH", "")]))
    if found is None:
        raise MeshError("no envoy binary: install the project (`make run` does) or set $ENVOY_BIN")
    return found


class LocalMesh:
    def __init__(self, settings: MeshSettings) -> None:
        self.settings = settings
        policy, diagnostics = load_policy_dir(settings.config_dir)
        self.diagnostics = [str(d) for d in diagnostics]
        # fixed ports (make run): each proxy keeps its ports across runs and policy edits
        self.ports_file = settings.log_dir.parent / PORTS_FILE if settings.proxy_port_base else None
        self.ports = Ports(settings.proxy_port_base, assigned=load_ports(self.ports_file))
        self.plan: MeshPlan = local_only(make_plan(policy, self.ports), policy)
        self.traces = where_traces_go(policy)
        ports = Ports(0)  # after the plan: OS-chosen ports never repeat one the plan uses
        self.xds = SocketAddress(LOOPBACK, settings.xds_port or ports.take())
        self.admin = SocketAddress(LOOPBACK, settings.admin_port or ports.take())
        self.processes: list[Process] = []
        self.supervisor: Supervisor | None = None
        self.envoy = find_envoy(settings.envoy_bin)

    # -- addresses -------------------------------------------------------------------------------------

    def _claims(self) -> list[tuple[SocketAddress, str]]:
        claims = [(self.xds, "control plane xDS"), (self.admin, "control plane admin")]
        for instance in self.plan.instances:
            # an endpoint is the service's address, whether its app or its sidecar's inbound binds it
            claims += [(address, f"service {instance.instance_id}") for address in instance.listen]
            claims += [(address, f"service {instance.instance_id} app") for address in instance.app_listen]
        for proxy in self.plan.proxies:
            claims.append((proxy.admin, f"envoy {proxy.node_id} admin"))
            if proxy.outbound is not None:
                claims.append((proxy.outbound, f"envoy {proxy.node_id} outbound listener"))
            if proxy.health is not None:
                claims.append((proxy.health, f"envoy {proxy.node_id} readiness listener"))
        return claims

    def check_ports(self) -> None:
        """MeshError listing every address some other program already holds."""
        busy = [
            f"{address} ({what}) is already in use"
            for address, what in self._claims()
            if port_in_use(address.host, address.port)
        ]
        if busy:
            raise MeshError(
                "cannot start the mesh:\n  "
                + "\n  ".join(busy)
                + "\n(another `make run`? stop it, or free the ports)"
            )

    # -- starting ----------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> Process:
        process = Process(name, argv, self.settings.log_dir)
        self.processes.append(process)
        return process

    def _start_control_plane(self) -> None:
        process = self._spawn(
            "controlplane",
            [
                sys.executable,
                "-m",
                "controlplane",
                "serve",
                "--config",
                str(self.settings.config_dir),
                "--xds-address",
                str(self.xds),
                "--admin-address",
                str(self.admin),
                # secured as a production mesh: proxies present tokens, xDS over TLS (docs/security.md)
                "--ca-dir",
                str(self.settings.mesh_ca_dir),
                "--xds-tls",
            ],
        )
        admin = str(self.admin)
        wait_ready({process: lambda: http_get(admin, "/readyz")[0] == 200}, self.settings.start_timeout)

    def start_service(self, instance: Instance) -> Process:
        sidecar = self.plan.sidecar_of(instance)
        argv = [
            sys.executable,
            "-m",
            "controlplane.mesh.demo_service",
            "--service",
            instance.service,
            "--version",
            instance.version,
            "--instance",
            instance.instance_id,
        ]
        for address in instance.binds:
            argv += ["--listen", str(address)]
        if sidecar.outbound is not None:
            argv += ["--proxy", str(sidecar.outbound)]
        return self._spawn(f"service-{instance.instance_id}", argv)

    def bootstrap_path(self, proxy: Proxy) -> Path:
        return self.settings.log_dir / "bootstrap" / f"{proxy.node_id}.yaml"

    def _token(self, proxy: Proxy) -> str:
        """The proxy's credential, signed with the control plane's key in the CA directory (which the
        control plane created before it answered /readyz)."""
        authority = TokenAuthority.load_or_create(self.settings.mesh_ca_dir)
        return authority.issue(namespace=proxy.namespace, service_account=proxy.service_account,
                               role=proxy.role.value, ttl=timedelta(days=30), now=datetime.now(UTC))

    def start_envoy(self, proxy: Proxy) -> Process:
        path = self.bootstrap_path(proxy)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            bootstrap_yaml(
                BootstrapSettings(
                    node_id=proxy.node_id,
                    xds_address=self.xds,
                    admin_address=proxy.admin,
                    outbound_address=proxy.outbound,
                    inbound_address=proxy.inbound,
                    app_ports=proxy.app_ports,
                    health_address=proxy.health,
                    # Gateway servers without `bind` stay on loopback in a developer's local mesh
                    gateway_bind=LOOPBACK if proxy.role is Role.GATEWAY else None,
                    labels=proxy.labels,
                    namespace=proxy.namespace,
                    service_account=proxy.service_account,
                    role=proxy.role,
                    delta=self.settings.delta,
                    token=self._token(proxy),
                    xds_ca=(self.settings.mesh_ca_dir / "root-cert.pem").read_bytes(),
                )
            )
        )
        return self._spawn(
            f"envoy-{proxy.node_id}",
            [
                self.envoy,
                "-c",
                str(path),
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "info",
            ],
        )

    def start(self) -> None:
        """Start everything and wait until it is ready; on failure stop what started and raise MeshError."""
        self.check_ports()
        self.save_ports()
        keep_previous_logs(self.settings.log_dir)
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_control_plane()
            services = {self.start_service(i): listening(i) for i in self.plan.instances}
            wait_ready(services, self.settings.start_timeout)
            envoys = {self.start_envoy(p): envoy_live(p) for p in self.plan.proxies}
            wait_ready(envoys, self.settings.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.write_state()

    # -- running ---------------------------------------------------------------------------------------

    def supervise(self, log: Callable[[str], None]) -> Supervisor:
        """From now on, a process that exits is restarted (see supervisor.py); call `poll()` on the result
        regularly (`keep_running` does). mesh.json follows the new PIDs."""
        self.supervisor = Supervisor(self.processes, log, on_restart=lambda _: self.write_state())
        return self.supervisor

    def keep_running(
        self, until: Callable[[], bool], log: Callable[[str], None], interval: float = 0.2
    ) -> None:
        """Supervise the mesh until `until()` is true."""
        supervisor = self.supervise(log)
        follower = PolicyFollower(self, log)  # instances the policy gains or loses start or stop
        while not until() and not supervisor.stopped:
            supervisor.poll()
            follower.poll()
            time.sleep(interval)

    def save_ports(self) -> None:
        save_ports(self.ports_file, self.ports)

    def sync_status(self, timeout: float = 10.0) -> tuple[bool, list[dict[str, Any]]]:
        """Wait until every Envoy of the plan is connected and has ACKed its current config (the control
        plane's /debug/syncz); (whether that happened within `timeout`, the streams)."""
        nodes = {proxy.node_id for proxy in self.plan.proxies}
        deadline = time.monotonic() + timeout
        while True:
            try:
                streams: list[dict[str, Any]] = inspect.fetch(str(self.admin), "/debug/syncz")
            except inspect.AdminError:
                streams = []
            connected = {stream.get("node") for stream in streams}
            if streams and nodes <= connected and inspect.all_synced(streams):
                return True, streams
            if time.monotonic() >= deadline:
                return False, streams
            time.sleep(0.1)

    def stop(self, timeout: float = 5.0) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()  # nothing is restarted while it is being stopped
        stop_all(list(reversed(self.processes)), timeout)

    @property
    def pids(self) -> dict[str, int]:
        return {p.name: p.pid for p in self.processes}

    def listeners(self, proxy: Proxy) -> list[str]:
        """The listener addresses an Envoy runs now (from its admin /listeners)."""
        try:
            status, body = http_get(str(proxy.admin), "/listeners?format=json")
            data: dict[str, Any] = json.loads(body) if status == 200 else {}
        except (OSError, ValueError):
            return []
        out = []
        for listener in data.get("listener_statuses", []):
            socket = listener.get("local_address", {}).get("socket_address", {})
            out.append(f"{listener.get('name')} {socket.get('address')}:{socket.get('port_value')}")
        return out

    def state(self) -> dict[str, Any]:
        return {
            "control_plane": {"xds": str(self.xds), "admin": f"http://{self.admin}"},
            "proxies": {
                p.node_id: {
                    "role": str(p.role),
                    "admin": f"http://{p.admin}",
                    "outbound": str(p.outbound) if p.outbound else None,
                    "inbound": str(p.inbound) if p.inbound else None,
                    "ready": f"http://{p.health}/healthz/ready" if p.health else None,
                    "urls": list(p.urls),
                }
                for p in self.plan.proxies
            },
            "services": {
                i.instance_id: {
                    "host": i.host,
                    "endpoints": [str(a) for a in i.listen],
                    "app": [str(a) for a in i.binds],
                }
                for i in self.plan.instances
            },
            "processes": [{"name": p.name, "pid": p.pid, "log": str(p.log_path)} for p in self.processes],
        }

    def write_state(self) -> None:
        (self.settings.log_dir / STATE_FILE).write_text(json.dumps(self.state(), indent=2) + "\n")

