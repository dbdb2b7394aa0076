"""Pieces of the mesh security e2e tests: an app that reports the headers it received (XFCC), sidecars that
present a token, a raw TLS/plaintext client for a sidecar's inbound port, and a scripted ADS stream that
says how the server answered it."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from tests.e2e.mesh import PYTHON, Envoy
from tests.harness import LOOPBACK

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


class _EchoHandler(BaseHTTPRequestHandler):
    server: _EchoServer
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        body = json.dumps({"upstream": self.server.name, "path": self.path,
                           "xfcc": self.headers.get("x-forwarded-client-cert", "")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    name = ""


class EchoApp:
    """An app on 127.0.0.1:<OS port> that answers {"upstream", "path", "xfcc"}."""

    def __init__(self, name: str) -> None:
        self._server = _EchoServer((LOOPBACK, 0), _EchoHandler)
        self._server.name = name
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def token(ca_dir: Path, *, namespace: str = "default", service_account: str, role: str = "sidecar",
          ttl: str = "1d") -> str:
    done = subprocess.run(
        [PYTHON, "-m", "controlplane", "token", "--ca-dir", str(ca_dir), "--namespace", namespace,
         "--service-account", service_account, "--role", role, "--ttl", ttl],
        capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


@dataclass
class MeshSidecar(Envoy):
    """A sidecar with a service account, a token file, labels and (optionally) an inbound listener."""

    service_account: str = "default"
    token_file: Path | None = None
    labels: str = ""
    inbound_port: int | None = None
    app_port: int | None = None
    xds_ca: Path | None = None
    role: str = "sidecar"
    namespace: str = "default"

    def bootstrap_args(self) -> list[str]:
        argv = ["--service-account", self.service_account, "--role", self.role, "--namespace", self.namespace]
        if self.role == "gateway":
            argv += ["--gateway-bind", LOOPBACK]
        if self.token_file is not None:
            argv += ["--token-file", str(self.token_file)]
        if self.xds_ca is not None:
            argv += ["--xds-ca", str(self.xds_ca)]
        if self.labels:
            argv += ["--labels", self.labels]
        if self.inbound_port is not None and self.app_port is not None:
            argv += ["--inbound-address", f"{LOOPBACK}:{self.inbound_port}",
                     "--app-ports", str(self.app_port)]
        return argv

    def cert_serials(self) -> list[str]:
        """Serial numbers of the certificates Envoy holds (its admin /certs)."""
        from tests.e2e.mesh import get_json

        certs = get_json(self.admin_port, "/certs")
        return sorted({chain["serial_number"] for cert in certs.get("certificates", [])
                       for chain in cert.get("cert_chain", [])})


def plaintext_get(port: int, timeout: float = 3.0) -> bytes:
    """Raw plaintext HTTP/1.1 to 127.0.0.1:port; b"" when the peer closes without answering."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


@dataclass(frozen=True)
class StreamOutcome:
    code: grpc.StatusCode | None  # None: the stream was still open when we stopped waiting
    responses: list[discovery_pb2.DeltaDiscoveryResponse]
    details: str = ""


def ads_stream(xds_address: str, *, namespace: str = "default", service_account: str = "default",
               role: str = "sidecar", bearer: str | None = None, names: tuple[str, ...] = (),
               type_url: str = SECRET_TYPE, wait: float = 2.0) -> StreamOutcome:
    """Open one delta ADS stream as a scripted proxy, subscribe to `names` of `type_url`, and report what
    the server did within `wait` seconds."""

    async def run() -> StreamOutcome:
        metadata = (("authorization", f"Bearer {bearer}"),) if bearer is not None else ()
        node_meta = struct_pb2.Struct()
        node_meta.update({"namespace": namespace, "service_account": service_account, "role": role})
        request = discovery_pb2.DeltaDiscoveryRequest(
            node=base_pb2.Node(id=f"scripted-{service_account}-{role}", metadata=node_meta),
            type_url=type_url, resource_names_subscribe=list(names))
        responses: list[discovery_pb2.DeltaDiscoveryResponse] = []
        async with grpc.aio.insecure_channel(xds_address) as channel:
            call = channel.stream_stream(
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
                request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
            )(metadata=metadata)
            await call.write(request)

            async def read() -> None:
                async for response in call:
                    responses.append(response)

            try:
                await asyncio.wait_for(read(), timeout=wait)
            except TimeoutError:
                call.cancel()
                return StreamOutcome(None, responses)
            except grpc.aio.AioRpcError as exc:
                return StreamOutcome(exc.code(), responses, exc.details() or "")
            return StreamOutcome(await call.code(), responses, await call.details() or "")

    return asyncio.run(run())
