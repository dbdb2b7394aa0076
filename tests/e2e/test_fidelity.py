"""Istio fidelity (issue 14) proven with real traffic through real Envoys: resolution NONE, a Kubernetes
Service selecting WorkloadEntries, a wildcard gateway host, and warnings that still apply (a route to a
missing subset or host answers 503, as Istio's Envoy does).

One control plane, one client sidecar and one gateway serve the module; each test writes its policy,
reloads, and waits until both proxies ACKed the new snapshot.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.gateway_harness import Authority, GatewayEnvoy, peer_certificate, request
from tests.e2e.live_support import atomic_write
from tests.e2e.mesh import ControlPlane
from tests.e2e.traffic_support import (
    POLICY_FILE,
    BehaviourUpstream,
    Sidecar,
    TrafficMesh,
    doc,
    documents,
    endpoint,
    service_entry,
)
from tests.harness import ProcessGroup, free_port, wait_until

pytestmark = pytest.mark.e2e

REGISTRY_ONLY = doc("MeshConfig", "mesh", {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}},
                    api="controlplane.io/v1alpha1")


@dataclass
class LocalSidecar(Sidecar):
    """A sidecar that says where it runs (node.locality), for locality load balancing."""

    locality: str = ""

    def bootstrap_args(self) -> list[str]:
        return [*super().bootstrap_args(), "--locality", self.locality]


@dataclass
class FidelityMesh:
    mesh: TrafficMesh
    gateway: GatewayEnvoy
    gateway_port: int
    west: LocalSidecar

    @property
    def client(self) -> Sidecar:
        return self.mesh.client

    def apply(self, objects: Sequence[dict[str, Any]]) -> list[str]:
        """Save and reload; only warnings and infos are allowed (they apply). Returns the diagnostics."""
        atomic_write(self.mesh.config_dir / POLICY_FILE, documents(objects))
        self.mesh.control_plane.reload()
        diagnostics: list[str] = self.mesh.control_plane.policy()["diagnostics"]
        errors = [d for d in diagnostics if not d.startswith(("Warning ", "Info "))]
        assert not errors, json.dumps(errors)
        self.mesh.wait_synced(timeout=20)
        return diagnostics


@pytest.fixture(scope="module")
def fmesh(envoy_binary: str, module_processes: ProcessGroup,
          tmp_path_factory: pytest.TempPathFactory) -> Generator[FidelityMesh, None, None]:
    work = tmp_path_factory.mktemp("fidelity")
    config_dir = work / "config"
    atomic_write(config_dir / POLICY_FILE, "")
    unused = BehaviourUpstream("unused")
    try:
        control_plane = ControlPlane(module_processes, config_dir)
        control_plane.start()
        client = Sidecar(envoy_binary, module_processes, work, "fidelity-client", control_plane.xds_address)
        west = LocalSidecar(envoy_binary, module_processes, work, "fidelity-west", control_plane.xds_address,
                            locality="us-west/zone1/sz1")
        gateway = GatewayEnvoy(envoy_binary, module_processes, work / "gw", "fidelity-gateway",
                               control_plane.xds_address, "istio=ingressgateway")
        client.start()
        west.start()
        gateway.start()
        mesh = TrafficMesh(control_plane, client, client, unused, config_dir, [client, west])
        mesh.wait_synced(timeout=20)
        gateway.wait_ready(timeout=30)
        yield FidelityMesh(mesh, gateway, free_port(), west)
    finally:
        unused.close()


@pytest.fixture
def upstream() -> Generator[BehaviourUpstream, None, None]:
    server = BehaviourUpstream("named")
    yield server
    server.close()


def test_resolution_none_reaches_the_named_host_under_registry_only(
    fmesh: FidelityMesh, upstream: BehaviourUpstream
) -> None:
    # Istio's default resolution (unset): the connection goes where the app asked, here localhost:<port>.
    fmesh.apply([REGISTRY_ONLY, doc("ServiceEntry", "local", {
        "hosts": ["localhost"], "ports": [{"number": upstream.port, "name": "http", "protocol": "HTTP"}]})])
    answer = fmesh.client.send(f"localhost:{upstream.port}")
    assert (answer.status, answer.upstream) == (200, "named"), answer
    # Not registered: REGISTRY_ONLY still blocks it.
    assert fmesh.client.send(f"127.0.0.1:{upstream.port}").status == 502


def test_kubernetes_service_selects_workload_entries(
    fmesh: FidelityMesh, upstream: BehaviourUpstream
) -> None:
    other = BehaviourUpstream("other")
    try:
        fmesh.apply([
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "t-details"},
             "spec": {"ports": [{"name": "http", "port": 9080}], "selector": {"app": "t-details"}}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "t-details-v1"},
             "spec": {"replicas": 1}},
            doc("WorkloadEntry", "t-details-vm", {"address": "127.0.0.1", "ports": {"http": upstream.port},
                                                  "labels": {"app": "t-details"}}),
            doc("WorkloadEntry", "t-ratings-vm", {"address": "127.0.0.1", "ports": {"http": other.port},
                                                  "labels": {"app": "t-ratings"}}),
        ])
        for host in ("t-details.default.svc.cluster.local:9080", "t-details:9080", "t-details"):
            answers = {fmesh.client.send(host).upstream for _ in range(5)}
            assert answers == {"named"}, (host, answers)
    finally:
        other.close()


def test_warnings_apply_with_istio_runtime_behaviour(
    fmesh: FidelityMesh, upstream: BehaviourUpstream
) -> None:
    diagnostics = fmesh.apply([
        service_entry("t-reviews", [endpoint(upstream)]),
        doc("VirtualService", "t-reviews", {"hosts": ["t-reviews"], "http": [
            {"match": [{"uri": {"prefix": "/v9"}}], "route": [{"destination": {"host": "t-reviews",
                                                                               "subset": "v9"}}]},
            {"match": [{"uri": {"prefix": "/gone"}}], "route": [{"destination": {"host": "t-gone"}}]},
            {"route": [{"destination": {"host": "t-reviews"}}]}]}),
    ])
    assert len(diagnostics) == 2 and all(d.startswith("Warning [IST0101] ") for d in diagnostics), diagnostics
    assert fmesh.client.send("t-reviews", "/v9").status == 503
    assert fmesh.client.send("t-reviews", "/gone").status == 503
    assert fmesh.client.send("t-reviews", "/").upstream == "named"


def test_wildcard_virtual_service_host_on_a_gateway(
    fmesh: FidelityMesh, upstream: BehaviourUpstream
) -> None:
    port = fmesh.gateway_port
    fmesh.apply([
        doc("Gateway", "bookinfo-gateway", {"selector": {"istio": "ingressgateway"}, "servers": [
            {"port": {"number": 8080, "name": "http", "protocol": "HTTP", "targetPort": port},
             "bind": "127.0.0.1", "hosts": ["*"]}]}, namespace="istio-system"),
        service_entry("t-productpage", [endpoint(upstream)]),
        doc("VirtualService", "bookinfo", {
            "hosts": ["*"], "gateways": ["istio-system/bookinfo-gateway"],
            "http": [{"match": [{"uri": {"exact": "/productpage"}}],
                      "route": [{"destination": {"host": "t-productpage"}}]}]}),
    ])
    wait_until(lambda: request(port, "/productpage", "anything.example").status == 200, timeout=10,
               what="the gateway listener")
    for host in ("bookinfo.example.com", "10.0.0.1", "x"):
        assert request(port, "/productpage", host).status == 200, host
    assert request(port, "/other", "bookinfo.example.com").status == 404


def test_sidecar_hides_services_of_other_namespaces(fmesh: FidelityMesh, upstream: BehaviourUpstream) -> None:
    hidden = service_entry("t-hidden", [endpoint(upstream)])
    hidden["metadata"]["namespace"] = "elsewhere"
    objects = [service_entry("t-visible", [endpoint(upstream)]), hidden]
    fmesh.apply(objects)
    assert fmesh.client.send("t-hidden.elsewhere").upstream == "named"  # visible without a Sidecar
    fmesh.apply([*objects, doc("Sidecar", "default", {
        "egress": [{"hosts": ["./*"]}], "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})])
    assert fmesh.client.send("t-visible").upstream == "named"
    assert fmesh.client.send("t-hidden.elsewhere").status == 502
    assert fmesh.client.cluster_stat("outbound|80||t-hidden", "upstream_rq_total") == 0


def test_gateway_certificate_files_are_read_and_rotated_by_the_gateway(
    fmesh: FidelityMesh, upstream: BehaviourUpstream, tmp_path: Path
) -> None:
    # Istio's serverCertificate / privateKey: files on the gateway; replacing them (by rename, as a
    # rotation tool does) changes what new handshakes get, without a policy change.
    first, second = Authority("files-ca-1"), Authority("files-ca-2")
    certs = tmp_path / "certs"
    first.write_credential(certs, "secure.example.test")
    port = fmesh.gateway_port
    fmesh.apply([
        doc("Gateway", "files", {"selector": {"istio": "ingressgateway"}, "servers": [
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS", "targetPort": port},
             "bind": "127.0.0.1", "hosts": ["secure.example.test"],
             "tls": {"mode": "SIMPLE", "serverCertificate": str(certs / "tls.crt"),
                     "privateKey": str(certs / "tls.key")}}]}, namespace="istio-system"),
        service_entry("t-secure", [endpoint(upstream)]),
        doc("VirtualService", "secure", {
            "hosts": ["secure.example.test"], "gateways": ["istio-system/files"],
            "http": [{"route": [{"destination": {"host": "t-secure"}}]}]}),
    ])

    def verified_by(authority: Authority) -> bool:
        try:
            peer_certificate("127.0.0.1", port, "secure.example.test", authority.pem)
        except (OSError, ssl.SSLError):
            return False
        return True

    wait_until(lambda: verified_by(first), timeout=10, what="the certificate from the files")
    reply = request(port, "/", "secure.example.test", context=first.client_context())
    assert reply.status == 200
    second.write_credential(certs, "secure.example.test")
    wait_until(lambda: verified_by(second), timeout=20, what="the rotated certificate")
    assert not verified_by(first)


def test_locality_failover(fmesh: FidelityMesh) -> None:
    # The west sidecar (us-west/zone1/sz1) prefers its own zone; when that endpoint fails, outlier
    # detection ejects it and traffic fails over to eu-west (the failover target) before us-east.
    near, east, europe = BehaviourUpstream("near"), BehaviourUpstream("east"), BehaviourUpstream("europe")
    try:
        fmesh.apply([
            doc("ServiceEntry", "t-loc", {
                "hosts": ["t-loc"], "location": "MESH_INTERNAL", "resolution": "STATIC",
                "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                "endpoints": [
                    {**endpoint(near), "locality": "us-west/zone1/sz1"},
                    {**endpoint(east), "locality": "us-east/zone1"},
                    {**endpoint(europe), "locality": "eu-west/zone1"}]}),
            doc("DestinationRule", "t-loc", {"host": "t-loc", "trafficPolicy": {
                "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "5m",
                                     "maxEjectionPercent": 100},
                "loadBalancer": {"localityLbSetting": {
                    "failover": [{"from": "us-west", "to": "eu-west"}]}}}}),
        ])
        assert {fmesh.west.send("t-loc").upstream for _ in range(10)} == {"near"}
        near.always_status = 503
        wait_until(lambda: fmesh.west.send("t-loc").upstream == "europe", timeout=15,
                   what="failover to eu-west")
        assert {fmesh.west.send("t-loc").upstream for _ in range(10)} == {"europe"}
        assert east.count == 0
    finally:
        for upstream in (near, east, europe):
            upstream.close()


def test_wildcard_resolution_none_resolves_each_authority(
    fmesh: FidelityMesh, upstream: BehaviourUpstream
) -> None:
    # `*.localhost` NONE: the dynamic forward proxy resolves the request's own authority
    # (RFC 6761: every *.localhost name is loopback), under REGISTRY_ONLY.
    fmesh.apply([REGISTRY_ONLY, doc("ServiceEntry", "wild", {
        "hosts": ["*.localhost"], "resolution": "NONE",
        "ports": [{"number": upstream.port, "name": "http", "protocol": "HTTP"}]})])
    answer = fmesh.client.send(f"api.localhost:{upstream.port}")
    assert (answer.status, answer.upstream) == (200, "named"), answer
    assert fmesh.client.send(f"api.example.invalid:{upstream.port}").status == 502


class _UpgradeUpstream:
    """Answers any request with 101 Switching Protocols, then echoes the bytes it receives (what a
    WebSocket server does after its handshake, without framing)."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True, name="upgrade-upstream")
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    @staticmethod
    def _handle(conn: Any) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\n\r\n")
            while chunk := conn.recv(4096):
                conn.sendall(chunk)

    def close(self) -> None:
        self._socket.close()


def _upgrade(port: int, authority: str, path: str) -> tuple[str, bytes]:
    """An Upgrade: websocket request through the sidecar's HTTP proxy: (status line, echo of b'ping')."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                break
            head += chunk
        status = head.split(b"\r\n", 1)[0].decode()
        if " 101 " not in status:
            return status, b""
        conn.sendall(b"ping")
        return status, conn.recv(4096)


def test_websocket_upgrade_only_on_routes_that_set_it(fmesh: FidelityMesh) -> None:
    upstream = _UpgradeUpstream()
    try:
        diagnostics = fmesh.apply([
            doc("ServiceEntry", "t-chat", {
                "hosts": ["t-chat"], "location": "MESH_INTERNAL", "resolution": "STATIC",
                "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                "endpoints": [{"address": "127.0.0.1", "ports": {"http": upstream.port}}]}),
            doc("VirtualService", "t-chat", {"hosts": ["t-chat"], "http": [
                {"match": [{"uri": {"prefix": "/socket"}}], "websocketUpgrade": True,
                 "route": [{"destination": {"host": "t-chat"}}]},
                {"route": [{"destination": {"host": "t-chat"}}]}]}),
        ])
        assert len(diagnostics) == 1 and "websocketUpgrade: deprecated" in diagnostics[0], diagnostics
        status, echo = _upgrade(fmesh.client.outbound_port, "t-chat", "/socket")
        assert " 101 " in status and echo == b"ping", (status, echo)
        # Without websocketUpgrade the connection manager refuses the upgrade (Envoy: 403).
        status, _ = _upgrade(fmesh.client.outbound_port, "t-chat", "/plain")
        assert " 101 " not in status, status
    finally:
        upstream.close()
