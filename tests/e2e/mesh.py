"""The pieces of an end-to-end test: tiny HTTP upstreams, the control plane as a subprocess, a real Envoy
sidecar, and the policy YAML they are driven by. Everything binds to 127.0.0.1 on ports the OS picked.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.harness import (
    LOOPBACK,
    GiveUp,
    ManagedProcess,
    ProcessGroup,
    free_port,
    port_is_free,
    wait_until,
)

PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[2]

# The xDS types Envoy's config_dump shows with a version each (EDS is only shown with ?include_eds).
DUMPED_TYPES = ("clusters", "listeners", "routes")
ALL_TYPES = ("clusters", "endpoints", "listeners", "routes")


# --- HTTP ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def upstream(self) -> str | None:
        """The name of the test upstream that answered, if one did."""
        try:
            data = self.json()
        except ValueError:
            return None
        return data.get("upstream") if isinstance(data, dict) else None


def http_request(port: int, path: str, *, host: str | None = None, method: str = "GET",
                 body: bytes | None = None, timeout: float = 3.0) -> Reply:
    """One HTTP/1.1 request to 127.0.0.1:port on a fresh connection (so no pooled connection outlives it)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        headers = {"Host": host} if host is not None else {}
        if method == "POST":
            headers["Content-Type"] = "application/json"  # the admin server refuses "simple" POSTs
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return Reply(response.status, response.read(), {k.lower(): v for k, v in response.getheaders()})
    finally:
        conn.close()


def get_json(port: int, path: str, *, method: str = "GET") -> Any:
    reply = http_request(port, path, method=method)
    if reply.status != 200:
        raise AssertionError(f"{method} {path} on :{port} -> {reply.status}: {reply.body[:500]!r}")
    return reply.json()


# --- upstreams ----------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _UpstreamHTTPServer
    # HTTP/1.0 responses close the connection, so no handler thread outlives a request
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        body = json.dumps({"upstream": self.server.name, "path": self.path,
                           "host": self.headers.get("Host", "")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


class _UpstreamHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    name = ""


class Upstream:
    """An HTTP server on 127.0.0.1:<OS port> in a thread; answers {"upstream": name, "path", "host"}."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._server = _UpstreamHTTPServer((LOOPBACK, 0), _Handler)
        self._server.name = name
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"upstream-{name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# --- policy YAML --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Service:
    """A ServiceEntry with one HTTP port and one endpoint at `address` (an IP, or a DNS name for DNS)."""

    name: str
    port: int
    upstream_port: int
    resolution: str = "STATIC"
    address: str = LOOPBACK

    @property
    def host(self) -> str:
        return f"{self.name}.test"

    @property
    def cluster(self) -> str:
        return f"outbound|{self.port}||{self.host}"

    def yaml(self) -> str:
        return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {self.name}
spec:
  hosts:
  - {self.host}
  location: MESH_INTERNAL
  resolution: {self.resolution}
  ports:
  - number: {self.port}
    name: http
    protocol: HTTP
  endpoints:
  - address: {self.address}
    ports:
      http: {self.upstream_port}
"""


@dataclass(frozen=True)
class Routes:
    """A VirtualService for `service`: each (uri prefix, destination service) in order."""

    service: Service
    routes: Sequence[tuple[str, Service]]

    def yaml(self) -> str:
        http = "".join(f"""\
  - name: r{index}
    match:
    - uri:
        prefix: {prefix}
    route:
    - destination:
        host: {dest.host}
        port:
          number: {dest.port}
""" for index, (prefix, dest) in enumerate(self.routes))
        return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {self.service.name}
spec:
  hosts:
  - {self.service.host}
  http:
{http}"""


def write_policy(config_dir: Path, files: Mapping[str, Iterable[Service | Routes]]) -> None:
    """Replace the YAML files of `config_dir` with `files` (file name -> objects)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    for old in config_dir.glob("*.yaml"):
        if old.name not in files:
            old.unlink()
    for name, objects in files.items():
        (config_dir / name).write_text("---\n".join(obj.yaml() for obj in objects))


# --- the control plane --------------------------------------------------------------------------------


@dataclass
class ControlPlane:
    """`python -m controlplane serve` as a subprocess; restartable on the same ports."""

    processes: ProcessGroup
    config_dir: Path
    extra_resources: Path | None = None
    serve_args: tuple[str, ...] = ()
    xds_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None
    # False: `--insecure-xds` (tests about other things use bootstraps without a token); True: proxies
    # must present a token (tests/e2e/test_security.py)
    secure: bool = False
    # the mesh CA's directory; None: beside the policy directory
    ca_path: Path | None = None

    @property
    def ca_dir(self) -> Path:
        return self.ca_path or self.config_dir.parent / f"{self.config_dir.name}-ca"

    @property
    def xds_address(self) -> str:
        return f"{LOOPBACK}:{self.xds_port}"

    def argv(self) -> list[str]:
        # with extra resources: the same server under the test hook of tests/e2e/hooked_serve.py
        program = ["controlplane"] if self.extra_resources is None else [
            "tests.e2e.hooked_serve", "--extra-resources", str(self.extra_resources)]
        argv = [PYTHON, "-m", *program, "serve", "--config", str(self.config_dir),
                "--xds-address", self.xds_address, "--admin-address", f"{LOOPBACK}:{self.admin_port}",
                "--ca-dir", str(self.ca_dir)]
        if not self.secure:
            argv.append("--insecure-xds")
        return [*argv, *self.serve_args]

    def start(self, timeout: float = 15.0) -> ManagedProcess:
        assert self.process is None or not self.process.running(), "already running"
        if self.process is not None:  # a restart on the same ports: wait until the old sockets are gone
            ports = (self.xds_port, self.admin_port)
            wait_until(lambda: all(port_is_free(port) for port in ports), timeout=timeout,
                       what=f"ports {ports} to be free again")
        # the hook runs from the repository's root, where `python -m tests.…` finds the test packages
        cwd = REPO if self.extra_resources is not None else None
        self.process = process = self.processes.start("controlplane", self.argv(), cwd=cwd)

        def ready() -> bool:
            if not process.running():
                raise GiveUp(f"the control plane exited ({process.returncode}): {process.output()[-2000:]}")
            return http_request(self.admin_port, "/readyz", timeout=1).status == 200

        wait_until(ready, timeout=timeout, what="the control plane's /readyz")
        return process

    def stop(self, timeout: float = 5.0) -> int:
        assert self.process is not None
        return self.process.stop(timeout)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def reload(self) -> Any:
        """POST /debug/reload: returns once the new policy is loaded and snapshots are rebuilt."""
        return get_json(self.admin_port, "/debug/reload", method="POST")

    def syncz(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = get_json(self.admin_port, "/debug/syncz")
        return result

    def streams_of(self, node_id: str) -> list[dict[str, Any]]:
        return [s for s in self.syncz() if s["node"] == node_id]

    def stream_of(self, node_id: str) -> dict[str, Any] | None:
        """The node's only stream (None when it is not connected); fails if it has several."""
        streams = self.streams_of(node_id)
        assert len(streams) <= 1, f"node {node_id} has {len(streams)} streams: {streams}"
        return streams[0] if streams else None

    def config_dump(self, node_id: str) -> dict[str, Any]:
        result: dict[str, Any] = get_json(self.admin_port, f"/debug/config_dump?node={node_id}")
        return result

    def policy(self) -> dict[str, Any]:
        result: dict[str, Any] = get_json(self.admin_port, "/debug/config")
        return result

    def resource_versions(self, node_id: str) -> dict[str, dict[str, str]]:
        """{type: {name: version}} of what the server serves this node."""
        dump = self.config_dump(node_id)
        return {t: {r["name"]: r["version"] for r in dump.get(t, [])} for t in ALL_TYPES}


# --- Envoy --------------------------------------------------------------------------------------------


@dataclass
class EnvoyView:
    """Envoy's config_dump, reduced to versions.

    `resources`: {type: {name: version_info}}. With delta xDS each resource carries its own version. With
    SotW it carries the version_info of the response that last *changed* it (Envoy skips unchanged
    resources), so only `type_versions` — the version_info of the last CDS / LDS response Envoy accepted —
    is the type-level version the server reports as sent and ACKed.
    """

    resources: dict[str, dict[str, str]] = field(default_factory=lambda: {t: {} for t in DUMPED_TYPES})
    type_versions: dict[str, str] = field(default_factory=dict)


@dataclass
class Envoy:
    """A real Envoy sidecar bootstrapped by `controlplane bootstrap` against a control plane."""

    binary: str
    processes: ProcessGroup
    work_dir: Path
    node_id: str
    xds_address: str
    delta: bool = True
    admin_port: int = field(default_factory=free_port)
    outbound_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    def bootstrap_args(self) -> list[str]:
        """Extra `controlplane bootstrap` flags (subclasses add inbound listeners, labels ...)."""
        return []

    def start(self, timeout: float = 20.0) -> ManagedProcess:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        bootstrap = self.work_dir / f"{self.node_id}.bootstrap.yaml"
        argv = [PYTHON, "-m", "controlplane", "bootstrap", "--node-id", self.node_id,
                "--xds-address", self.xds_address, "--admin-address", f"{LOOPBACK}:{self.admin_port}",
                "--outbound-address", f"{LOOPBACK}:{self.outbound_port}", *self.bootstrap_args()]
        if not self.delta:
            argv.append("--sotw")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, f"controlplane bootstrap failed: {done.stderr}"
        bootstrap.write_text(done.stdout)
        self.process = process = self.processes.start(
            f"envoy-{self.node_id}",
            [self.binary, "-c", str(bootstrap), "--disable-hot-restart", "--log-level", "info",
             "--concurrency", "1"],
        )

        def live() -> bool:
            if not process.running():
                raise GiveUp(f"envoy exited with {process.returncode}: {process.output()[-2000:]}")
            reply = http_request(self.admin_port, "/ready", timeout=1)
            return reply.status == 200 and reply.body.strip() == b"LIVE"

        wait_until(live, timeout=timeout, what=f"envoy {self.node_id} to be LIVE")
        return process

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def stats(self) -> dict[str, int]:
        """Counters and gauges by name (histograms left out)."""
        text = http_request(self.admin_port, "/stats").body.decode()
        out: dict[str, int] = {}
        for line in text.splitlines():
            name, sep, value = line.rpartition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def config_dump(self) -> dict[str, Any]:
        result: dict[str, Any] = get_json(self.admin_port, "/config_dump")
        return result

    def view(self) -> EnvoyView:
        """What Envoy's /config_dump says it runs (active dynamic resources only)."""
        view = EnvoyView()
        for config in self.config_dump()["configs"]:
            kind = config["@type"].rpartition(".")[2]
            if kind == "ClustersConfigDump":
                view.type_versions["clusters"] = config.get("version_info", "")
                for item in config.get("dynamic_active_clusters", []):
                    view.resources["clusters"][item["cluster"]["name"]] = item.get("version_info", "")
            elif kind == "ListenersConfigDump":
                view.type_versions["listeners"] = config.get("version_info", "")
                for item in config.get("dynamic_listeners", []):
                    active = item.get("active_state")
                    if active is not None:
                        view.resources["listeners"][item["name"]] = active.get("version_info", "")
            elif kind == "RoutesConfigDump":
                for item in config.get("dynamic_route_configs", []):
                    view.resources["routes"][item["route_config"]["name"]] = item.get("version_info", "")
        return view

    def dynamic(self) -> dict[str, dict[str, str]]:
        """{type: {name: version_info}} of Envoy's active dynamic clusters, listeners and route configs."""
        return self.view().resources

    def warming(self) -> dict[str, int]:
        stats = self.stats()
        return {name: stats.get(name, -1) for name in ("cluster_manager.warming_clusters",
                                                        "listener_manager.total_listeners_warming")}

    def request(self, host: str, path: str = "/", timeout: float = 3.0) -> Reply:
        """A request through the sidecar's outbound listener, as an app would send it."""
        return http_request(self.outbound_port, path, host=host, timeout=timeout)


def sigterm(process: ManagedProcess) -> None:
    process.send_signal(signal.SIGTERM)
