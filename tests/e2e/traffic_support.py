"""Helpers for tests/e2e/test_traffic.py: Istio traffic behaviours proven with real traffic.

- `BehaviourUpstream`: an HTTP server (threads, in this process) on 127.0.0.1 (or another loopback address)
  that answers `{"upstream": name, ...}`, counts requests, and fails or is slow on demand — programmed from
  the test (`fail_first`, `always_status`, `delay_first`, `healthy`) or per request (headers `x-status`,
  `x-delay-ms`).
- `TcpNameServer`: a TCP server that answers every connection with its name.
- `Sidecar`: `tests.e2e.mesh.Envoy` plus the bootstrap flags the shared wrapper does not pass
  (`--inbound-address`, `--app-ports`, `--labels`).
- `TrafficMesh`: one control plane and its sidecars; `apply()` saves the policy file atomically, reloads
  and waits until every proxy has ACKed the new snapshot (syncz: every type SYNCED with the current one).
- Policy builders (`service_entry`, `doc`, `documents`) that produce Istio YAML from dicts.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.live_support import atomic_write
from tests.e2e.mesh import ControlPlane, Envoy, get_json
from tests.harness import LOOPBACK, wait_until

POLICY_FILE = "traffic.yaml"


# --- client side --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One response through a sidecar, with how long it took."""

    status: int
    body: bytes
    headers: Mapping[str, str]
    elapsed: float

    @property
    def upstream(self) -> str | None:
        """The name of the `BehaviourUpstream` that answered, None when none did (a local reply)."""
        try:
            data = json.loads(self.body)
        except ValueError:
            return None
        return data.get("upstream") if isinstance(data, dict) else None


def send(port: int, host: str, path: str = "/", *, headers: Mapping[str, str] | None = None,
         method: str = "GET", timeout: float = 5.0) -> Answer:
    """One HTTP/1.1 request to 127.0.0.1:port with `Host: host`, on a fresh connection."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    started = time.monotonic()
    try:
        conn.request(method, path, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        body = response.read()
        return Answer(response.status, body, {k.lower(): v for k, v in response.getheaders()},
                      time.monotonic() - started)
    finally:
        conn.close()


def send_concurrently(port: int, host: str, path: str, count: int, concurrency: int, *,
                      headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> list[Answer]:
    """`count` requests, `concurrency` at a time, each on its own connection."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(send, port, host, path, headers=headers, timeout=timeout)
                   for _ in range(count)]
        return [future.result() for future in futures]


# --- HTTP upstreams -----------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request an upstream received."""

    method: str
    path: str
    headers: dict[str, str]


class _BehaviourHandler(BaseHTTPRequestHandler):
    server: _BehaviourServer
    protocol_version = "HTTP/1.0"  # close after each response: no handler thread outlives its request

    def _answer(self) -> None:
        upstream = self.server.owner
        if self.path.split("?")[0] == "/healthz":
            upstream.health_checks += 1
            self._reply(200 if upstream.healthy else 503, {"upstream": upstream.name, "healthz": True})
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, delay = upstream.record(Seen(self.command, self.path, headers))
        if "x-delay-ms" in headers:
            delay = max(delay, int(headers["x-delay-ms"]) / 1000)
        if "x-status" in headers:
            status = int(headers["x-status"])
        if delay:
            time.sleep(delay)
        self._reply(status, {"upstream": upstream.name, "path": self.path, "host": headers.get("host", "")})

    def _reply(self, status: int, data: dict[str, Any]) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_OPTIONS = do_HEAD = _answer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


class _BehaviourServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: BehaviourUpstream

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Envoy resets connections it gave up on (timeouts): the late write's broken pipe is expected."""


class BehaviourUpstream:
    """An HTTP upstream that reports its name, counts requests and fails or is slow on demand.

    Programmed by the test (thread-safe): the first `fail_first` requests get `fail_status`; with
    `always_status` set every request gets it; the first `delay_first` requests wait `delay` seconds;
    `healthy` decides /healthz (200 / 503). Per request: header `x-status: N`, `x-delay-ms: N`.
    /healthz requests are counted apart (`health_checks`), never in `count`.
    """

    def __init__(self, name: str, host: str = LOOPBACK, port: int = 0) -> None:
        self.name = name
        self._lock = threading.Lock()
        self.seen: list[Seen] = []
        self.fail_first = 0
        self.fail_status = 503
        self.always_status: int | None = None
        self.delay_first = 0
        self.delay = 0.0
        self.healthy = True
        self.health_checks = 0
        self._server = _BehaviourServer((host, port), _BehaviourHandler)
        self._server.owner = self
        self.host: str = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"upstream-{name}", daemon=True)
        self._thread.start()

    def record(self, seen: Seen) -> tuple[int, float]:
        """Count a request; (status, delay) it gets from the programmed behaviour."""
        with self._lock:
            index = len(self.seen)
            self.seen.append(seen)
            status = 200
            if self.always_status is not None:
                status = self.always_status
            elif index < self.fail_first:
                status = self.fail_status
            delay = self.delay if index < self.delay_first else 0.0
            return status, delay

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.seen)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __repr__(self) -> str:
        return f"<BehaviourUpstream {self.name} {self.host}:{self.port} count={self.count}>"


# --- TCP upstreams ------------------------------------------------------------------------------------


class _NameHandler(socketserver.BaseRequestHandler):
    server: _NameTcpServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(2)
        try:
            sock.recv(4096)  # the client's hello (a line, or a TLS ClientHello)
            sock.sendall(self.server.owner.name.encode() + b"\n")
            with self.server.owner._lock:
                self.server.owner.connections += 1
            # close gracefully: unread input at close() would make the kernel send a reset
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
        except OSError:
            return


class _NameTcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    owner: TcpNameServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is no test failure."""


class TcpNameServer:
    """A TCP server on 127.0.0.1:<OS port>: reads a hello, answers `<name>\\n`, counts connections."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections = 0
        self._lock = threading.Lock()
        self._server = _NameTcpServer((LOOPBACK, 0), _NameHandler)
        self._server.owner = self
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"tcp-{name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def tcp_hello(host: str, port: int, timeout: float = 3.0) -> str:
    """Connect, say hello, return the line the server answered ('' when the connection closed)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"hello\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1024)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


def client_hello(sni: str) -> bytes:
    """The bytes of a real TLS ClientHello naming `sni` (what a TLS client sends first)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def sni_hello(host: str, port: int, sni: str, timeout: float = 3.0) -> str:
    """Open a TLS connection's first flight with SNI `sni` and return the line the backend answered:
    Envoy routes the bytes by SNI without terminating TLS, so a plain `TcpNameServer` behind it says
    who it is."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(client_hello(sni))
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1024)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


def can_bind(host: str) -> bool:
    """Whether this sandbox lets us bind a socket on `host` (e.g. a loopback alias such as 127.0.0.77)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


def free_port_on(hosts: Sequence[str], attempts: int = 50) -> int:
    """A port that is free on every one of `hosts` (for servers on several loopback addresses)."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first:
            first.bind((hosts[0], 0))
            port: int = first.getsockname()[1]
        ok = True
        for host in hosts[1:]:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError(f"no port free on all of {hosts}")


# --- policy YAML --------------------------------------------------------------------------------------


def doc(kind: str, name: str, spec: dict[str, Any], *, namespace: str | None = None,
        api: str = "networking.istio.io/v1") -> dict[str, Any]:
    """One Istio object."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": api, "kind": kind, "metadata": metadata, "spec": spec}


def endpoint(upstream: BehaviourUpstream | TcpNameServer, port_name: str = "http", *,
             address: str = LOOPBACK, **labels: str) -> dict[str, Any]:
    """A ServiceEntry endpoint for a test server."""
    out: dict[str, Any] = {"address": getattr(upstream, "host", address), "ports": {port_name: upstream.port}}
    if labels:
        out["labels"] = labels
    return out


def service_entry(host: str, endpoints: Sequence[dict[str, Any]] | None = None, *, port: int = 80,
                  protocol: str = "HTTP", port_name: str = "http", addresses: Sequence[str] = (),
                  workload_selector: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A STATIC ServiceEntry named after its (short) host with one port."""
    spec: dict[str, Any] = {
        "hosts": [host],
        "location": "MESH_INTERNAL",
        "resolution": "STATIC",
        "ports": [{"number": port, "name": port_name, "protocol": protocol}],
    }
    if addresses:
        spec["addresses"] = list(addresses)
    if workload_selector is not None:
        spec["workloadSelector"] = {"labels": dict(workload_selector)}
    else:
        spec["endpoints"] = list(endpoints or [])
    return doc("ServiceEntry", host, spec)


def subsets(*versions: str) -> list[dict[str, Any]]:
    """DestinationRule subsets named after `version` label values."""
    return [{"name": v, "labels": {"version": v}} for v in versions]


def documents(objects: Sequence[dict[str, Any]]) -> str:
    """Multi-document YAML."""
    return yaml.safe_dump_all(list(objects), sort_keys=False)


# --- proxies and the control plane --------------------------------------------------------------------


@dataclass
class Sidecar(Envoy):
    """The shared Envoy wrapper, bootstrapped with an inbound listener and labels when given."""

    inbound_port: int | None = None
    app_ports: tuple[int, ...] = ()
    labels: str = ""

    def bootstrap_args(self) -> list[str]:
        argv: list[str] = []
        if self.inbound_port is not None:
            argv += ["--inbound-address", f"{LOOPBACK}:{self.inbound_port}",
                     "--app-ports", ",".join(str(p) for p in self.app_ports)]
        if self.labels:
            argv += ["--labels", self.labels]
        return argv

    def send(self, host: str, path: str = "/", **kwargs: Any) -> Answer:
        """A request through this sidecar's outbound listener, as its app would send it."""
        return send(self.outbound_port, host, path, **kwargs)

    def cluster_stat(self, cluster: str, stat: str) -> int:
        """One counter or gauge of a cluster (0 when Envoy has not created it)."""
        return self.stats().get(f"cluster.{cluster}.{stat}", 0)


@dataclass
class TrafficMesh:
    """One control plane, a client sidecar and a server sidecar (with an inbound listener for `app`)."""

    control_plane: ControlPlane
    client: Sidecar
    server: Sidecar
    app: BehaviourUpstream
    config_dir: Path
    sidecars: list[Sidecar] = field(default_factory=list)

    def apply(self, objects: Sequence[dict[str, Any]], timeout: float = 15.0) -> None:
        """Save the policy (one file, atomically, as an editor does), reload, and wait until every
        sidecar has ACKed every type of the new snapshot and warms nothing."""
        text = documents(objects)
        atomic_write(self.config_dir / POLICY_FILE, text)
        self.control_plane.reload()
        diagnostics = self.control_plane.policy()["diagnostics"]
        assert not diagnostics, f"the policy has diagnostics: {json.dumps(diagnostics)}\n{text}"
        self.wait_synced(timeout)

    def synced(self) -> bool:
        if get_json(self.control_plane.admin_port, "/debug/config").get("reload_pending"):
            return False
        streams = {s["node"]: s for s in self.control_plane.syncz()}
        for sidecar in self.sidecars:
            stream = streams.get(sidecar.node_id)
            if stream is None or not stream["synced"]:
                return False
            if stream["snapshot_version"] != stream["current_snapshot_version"]:
                return False
            if any(t["state"] != "SYNCED" for t in stream["types"].values()):
                return False
            if any(v != 0 for v in sidecar.warming().values()):
                return False
        return True

    def wait_synced(self, timeout: float = 15.0) -> None:
        wait_until(self.synced, timeout=timeout, what="every sidecar to ACK the current snapshot",
                   describe=lambda: json.dumps(self.control_plane.syncz()))


def cluster(host: str, port: int = 80, subset: str = "") -> str:
    """Istio's outbound cluster name."""
    return f"outbound|{port}|{subset}|{host}"
