"""Pieces for gateway end-to-end tests: certificates made in the test (`cryptography`), gateway Envoys,
TLS and gRPC backends, and clients that pick their source address or verify what certificate they got.
Built on tests/e2e/mesh.py and tests/harness.py (127.0.0.1, OS ports, processes stopped by PID).
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import socket
import ssl
import subprocess
import threading
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

from tests.e2e.mesh import PYTHON, Reply
from tests.harness import LOOPBACK, GiveUp, ManagedProcess, ProcessGroup, free_port, wait_until

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "dev_certs.py"


def _dev_certs() -> ModuleType:
    # The same generator `scripts/dev_certs.py` uses for config/credentials (scripts/ is not a package).
    spec = importlib.util.spec_from_file_location("dev_certs", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


certs = _dev_certs()


@dataclass
class Authority:
    """A test CA that signs server and client certificates."""

    name: str
    key_and_cert: Any = None
    pem: bytes = b""

    def __post_init__(self) -> None:
        from cryptography.hazmat.primitives import serialization

        self.key_and_cert = certs.make_ca(self.name)
        self.pem = self.key_and_cert[1].public_bytes(serialization.Encoding.PEM)

    def issue(self, *hosts: str, client: bool = False) -> tuple[bytes, bytes]:
        cert, key = certs.make_leaf(self.key_and_cert, list(hosts), client)
        return cert, key

    def write_credential(self, directory: Path, *hosts: str, ca: bytes | None = None) -> None:
        """Files replaced by rename, as a rotation tool would, so a reader never sees half a file."""
        cert, key = self.issue(*hosts)
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in (("tls.key", key), ("tls.crt", cert), ("ca.crt", ca)):
            if data is None:
                continue
            temp = directory / f".{name}.tmp"
            temp.write_bytes(data)
            temp.replace(directory / name)

    def client_context(
        self, cert_dir: Path | None = None, alpn: tuple[str, ...] = ("http/1.1",)
    ) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.pem.decode())
        context.set_alpn_protocols(list(alpn))
        if cert_dir is not None:
            context.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
        return context


def write_files(directory: Path, files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)


# --- clients --------------------------------------------------------------------------------------------


def request(
    port: int,
    path: str,
    host: str,
    *,
    source: str = LOOPBACK,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    method: str = "GET",
    timeout: float = 3.0,
) -> Reply:
    """One request on a fresh connection from `source` (an address on 127.0.0.0/8), HTTPS with `context`."""
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout, source_address=(source, 0))
    else:
        conn = _SniHTTPSConnection(host, port, context, source, timeout)
    try:
        conn.request(method, path, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        return Reply(response.status, response.read(), {k.lower(): v for k, v in response.getheaders()})
    finally:
        conn.close()


class _SniHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 with `sni` as server name (SNI and certificate check)."""

    def __init__(self, sni: str, port: int, context: ssl.SSLContext, source: str, timeout: float) -> None:
        super().__init__(LOOPBACK, port, timeout=timeout, context=context, source_address=(source, 0))
        self._sni = sni
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((LOOPBACK, self.port), self.timeout, self.source_address)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self._sni)


def peer_certificate(
    address: str, port: int, sni: str, ca_pem: bytes, timeout: float = 3.0
) -> dict[str, Any]:
    """Handshake with `sni`, verifying against `ca_pem`; the peer certificate as `ssl` decodes it."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    with (
        socket.create_connection((address, port), timeout) as sock,
        context.wrap_socket(sock, server_hostname=sni) as tls,
    ):
        cert = tls.getpeercert()
        assert cert is not None
        return cert


def common_name(cert: dict[str, Any]) -> str:
    return next(value for rdn in cert["subject"] for key, value in rdn if key == "commonName")


# --- backends -------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: TlsUpstream._Server
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        body = json.dumps({"upstream": self.server.name, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class TlsUpstream:
    """An HTTPS server on 127.0.0.1 with its own certificate (a passthrough backend or an external host)."""

    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        block_on_close = False
        name = ""
        context: ssl.SSLContext

        def finish_request(self, request: Any, client_address: Any) -> None:
            # Handshake in the handler thread: a client that never finishes it must not block accept().
            request.settimeout(5)
            tls = self.context.wrap_socket(request, server_side=True)
            try:
                self.RequestHandlerClass(tls, client_address, self)
            finally:
                tls.close()

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # refused handshakes are part of the tests

    def __init__(self, name: str, cert: bytes, key: bytes, work_dir: Path) -> None:
        write_files(work_dir / name, {"tls.crt": cert, "tls.key": key})
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(work_dir / name / "tls.crt", work_dir / name / "tls.key")
        self._server = self._Server((LOOPBACK, 0), _Handler)
        self._server.name = name
        self._server.context = context
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class GrpcEcho:
    """A gRPC server with one method, `/test.Echo/Say`: b"echo:" + request (raw bytes, no protoc)."""

    METHOD = "/test.Echo/Say"

    def __init__(self) -> None:
        def say(request: bytes, context: grpc.ServicerContext) -> bytes:
            return b"echo:" + request

        handler = grpc.method_handlers_generic_handler(
            "test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_insecure_port(f"{LOOPBACK}:0")
        self._server.start()

    def close(self) -> None:
        self._server.stop(grace=None).wait(5)


# --- gateway Envoys -------------------------------------------------------------------------------------


@dataclass
class GatewayEnvoy:
    """A real Envoy bootstrapped as a gateway (`--role gateway`) with the given labels."""

    binary: str
    processes: ProcessGroup
    work_dir: Path
    node_id: str
    xds_address: str
    labels: str
    namespace: str = "istio-system"
    admin_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    def start(self) -> ManagedProcess:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            PYTHON,
            "-m",
            "controlplane",
            "bootstrap",
            "--node-id",
            self.node_id,
            "--role",
            "gateway",
            "--xds-address",
            self.xds_address,
            "--admin-address",
            f"{LOOPBACK}:{self.admin_port}",
            "--labels",
            self.labels,
            "--namespace",
            self.namespace,
            "--health-address",
            f"{LOOPBACK}:{self.health_port}",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, f"controlplane bootstrap failed: {done.stderr}"
        bootstrap = self.work_dir / f"{self.node_id}.bootstrap.yaml"
        bootstrap.write_text(done.stdout)
        self.process = self.processes.start(
            f"envoy-{self.node_id}",
            [
                self.binary,
                "-c",
                str(bootstrap),
                "--disable-hot-restart",
                "--log-level",
                "info",
                "--concurrency",
                "1",
            ],
        )
        return self.process

    def ready(self) -> bool:
        return self.health().status == 200

    def health(self) -> Reply:
        conn = http.client.HTTPConnection(LOOPBACK, self.health_port, timeout=1)
        try:
            conn.request("GET", "/healthz/ready")
            response = conn.getresponse()
            return Reply(response.status, response.read(), {})
        finally:
            conn.close()

    def wait_ready(self, timeout: float = 20.0) -> None:
        process = self.process
        assert process is not None

        def probe() -> bool:
            if not process.running():
                raise GiveUp(f"envoy exited with {process.returncode}: {process.output()[-2000:]}")
            return self.ready()

        wait_until(probe, timeout=timeout, what=f"gateway {self.node_id} /healthz/ready")
