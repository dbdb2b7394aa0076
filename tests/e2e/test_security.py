"""Mesh identity and mTLS with real Envoys and real traffic (issue 10).

One control plane (xDS authentication on, workload certificates of 20 s so that rotation happens during
the module) and two sidecars with their own service accounts and tokens: `a` (a client) and `b` (with an
inbound listener in front of an app that reports the x-forwarded-client-cert it received). b's endpoint
carries `security.istio.io/tlsMode: istio`, so a calls it with ISTIO_MUTUAL (auto mTLS). Each test writes
the PeerAuthentication it needs and waits until both proxies ACKed it.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.e2e.live_support import atomic_write
from tests.e2e.mesh import PYTHON, ControlPlane, http_request
from tests.e2e.security_support import (
    CLUSTER_TYPE,
    EchoApp,
    MeshSidecar,
    ads_stream,
    plaintext_get,
    token,
)
from tests.harness import LOOPBACK, ProcessGroup, free_port, wait_until

pytestmark = pytest.mark.e2e

CERT_TTL = "20s"
A_ID = "spiffe://cluster.local/ns/default/sa/a"


def services(b_inbound: int, plain_port: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: b}}
spec:
  hosts: [b.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - address: {LOOPBACK}
    ports: {{http: {b_inbound}}}
    serviceAccount: b
    labels: {{app: b, security.istio.io/tlsMode: istio}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: plain}}
spec:
  hosts: [plain.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - address: {LOOPBACK}
    ports: {{http: {plain_port}}}
    labels: {{app: plain}}
"""


def gateway(http_port: int, mtls_port: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: ingress, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {http_port}, name: http, protocol: HTTP}}
    hosts: ["*"]
  - port: {{number: {mtls_port}, name: https-mesh, protocol: HTTPS}}
    hosts: ["*"]
    tls: {{mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: b-ingress}}
spec:
  hosts: [b.test]
  gateways: [istio-system/ingress]
  http:
  - route:
    - destination: {{host: b.test, port: {{number: 80}}}}
"""


def peer_authentication(mesh_mode: str, workload_mode: str | None = None) -> str:
    text = f"""\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-system}}
spec:
  mtls: {{mode: {mesh_mode}}}
"""
    if workload_mode is not None:
        text += f"""\
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {{name: b, namespace: default}}
spec:
  selector: {{matchLabels: {{app: b}}}}
  mtls: {{mode: {workload_mode}}}
"""
    return text


@dataclass
class SecureMesh:
    control_plane: ControlPlane
    a: MeshSidecar
    b: MeshSidecar
    gateway: MeshSidecar
    gateway_http: int
    gateway_mtls: int
    app_b: EchoApp
    app_plain: EchoApp
    config_dir: Path

    def apply(self, peer: str) -> None:
        atomic_write(self.config_dir / "peer.yaml", peer)
        self.control_plane.reload()
        self.wait_synced()

    def wait_synced(self) -> None:
        def synced() -> bool:
            streams = self.control_plane.syncz()
            nodes = {s["node"]: s for s in streams}
            return all(nodes.get(n, {}).get("synced") for n in ("a", "b", "ingress"))
        wait_until(synced, timeout=20, what="a, b and the ingress to ACK the current config")

    def call_b(self) -> dict[str, str]:
        reply = self.a.request("b.test", "/hello")
        assert reply.status == 200, (reply.status, reply.body[:300])
        data: dict[str, str] = reply.json()
        return data


@pytest.fixture(scope="module")
def smesh(envoy_binary: str, module_processes: ProcessGroup,
          tmp_path_factory: pytest.TempPathFactory) -> Generator[SecureMesh, None, None]:
    work = tmp_path_factory.mktemp("security")
    config_dir = work / "policy"
    config_dir.mkdir()
    app_b, app_plain = EchoApp("b"), EchoApp("plain")
    b_inbound = free_port()
    (config_dir / "services.yaml").write_text(services(b_inbound, app_plain.port))
    (config_dir / "peer.yaml").write_text(peer_authentication("STRICT"))
    gateway_http, gateway_mtls = free_port(), free_port()
    (config_dir / "gateway.yaml").write_text(gateway(gateway_http, gateway_mtls))
    cp = ControlPlane(module_processes, config_dir, secure=True,
                      serve_args=("--workload-cert-ttl", CERT_TTL, "--xds-tls"))
    cp.start()
    sidecars = []
    proxies: list[tuple[str, str, str, str, dict[str, object]]] = [
        ("a", "a", "default", "app=a", {}),
        ("b", "b", "default", "app=b", {"inbound_port": b_inbound, "app_port": app_b.port}),
        ("ingress", "istio-ingressgateway", "istio-system", "istio=ingressgateway", {"role": "gateway"}),
    ]
    for name, account, namespace, labels, extra in proxies:
        token_file = work / f"{name}.token"
        role = str(extra.get("role", "sidecar"))
        token_file.write_text(token(cp.ca_dir, namespace=namespace, service_account=account, role=role))
        sidecar = MeshSidecar(envoy_binary, module_processes, work, name, cp.xds_address,
                              service_account=account, token_file=token_file, labels=labels,
                              namespace=namespace, xds_ca=cp.ca_dir / "root-cert.pem",
                              **extra)  # type: ignore[arg-type]
        sidecar.start()
        sidecars.append(sidecar)
    mesh = SecureMesh(control_plane=cp, a=sidecars[0], b=sidecars[1], gateway=sidecars[2],
                      gateway_http=gateway_http, gateway_mtls=gateway_mtls, app_b=app_b,
                      app_plain=app_plain, config_dir=config_dir)
    try:
        mesh.wait_synced()
        yield mesh
    finally:
        app_b.close()
        app_plain.close()


@pytest.fixture
def strict(smesh: SecureMesh) -> SecureMesh:
    smesh.apply(peer_authentication("STRICT"))
    return smesh


def test_request_between_sidecars_is_mtls_with_the_callers_identity(strict: SecureMesh) -> None:
    answer = strict.call_b()
    assert answer["upstream"] == "b"
    # Envoy put the caller's SPIFFE id in XFCC after verifying its certificate against ROOTCA
    assert f"URI={A_ID}" in answer["xfcc"], answer
    # a service without a sidecar is called in plaintext (auto mTLS): no XFCC reaches it
    reply = strict.a.request("plain.test", "/")
    assert reply.status == 200 and reply.json()["xfcc"] == ""
    stats = strict.a.stats()
    assert stats.get("cluster.outbound|80||b.test.ssl.handshake", 0) >= 1, "a never did a TLS handshake to b"
    # the identity in /debug/syncz is the one the token proved
    identity = {s["node"]: s["identity"] for s in strict.control_plane.syncz()}["a"]
    assert identity["spiffe_id"] == A_ID and identity["authenticated"] == A_ID
    assert identity["cert_serial"] and identity["cert_expiry"]


def test_strict_refuses_a_plaintext_client(strict: SecureMesh) -> None:
    assert strict.b.inbound_port is not None
    assert plaintext_get(strict.b.inbound_port) == b""


def test_permissive_serves_both_and_disable_only_plaintext(smesh: SecureMesh) -> None:
    assert smesh.b.inbound_port is not None
    smesh.apply(peer_authentication("PERMISSIVE"))
    assert plaintext_get(smesh.b.inbound_port).startswith(b"HTTP/1.1 200")
    assert f"URI={A_ID}" in smesh.call_b()["xfcc"]

    # a workload-level DISABLE overrides the mesh's STRICT: plaintext only, and a's auto mTLS follows
    smesh.apply(peer_authentication("STRICT", workload_mode="DISABLE"))
    assert plaintext_get(smesh.b.inbound_port).startswith(b"HTTP/1.1 200")
    assert smesh.call_b()["xfcc"] == "", "b's DISABLE: a must call it in plaintext"


def test_streams_without_a_valid_credential_get_nothing(strict: SecureMesh, tmp_path: Path) -> None:
    ca_dir = strict.control_plane.ca_dir
    # the module's xDS port speaks TLS; these scripted streams go to a plaintext twin with its own CA
    twin = ControlPlane(strict.control_plane.processes, strict.config_dir, secure=True,
                        ca_path=tmp_path / "twin-ca")
    twin.start()
    try:
        # the twin uses its own CA dir: make tokens there
        good = token(twin.ca_dir, service_account="a")
        forged = token(ca_dir, service_account="a")  # signed by another control plane's key
        expired = token(twin.ca_dir, service_account="a", ttl="1s")
        time.sleep(2.2)
        cases = {
            "missing": (None, "a", "sidecar", grpc.StatusCode.UNAUTHENTICATED),
            "garbage": ("not-a-token", "a", "sidecar", grpc.StatusCode.UNAUTHENTICATED),
            "forged": (forged, "a", "sidecar", grpc.StatusCode.UNAUTHENTICATED),
            "expired": (expired, "a", "sidecar", grpc.StatusCode.UNAUTHENTICATED),
            "other account": (good, "b", "sidecar", grpc.StatusCode.PERMISSION_DENIED),
            "claims gateway": (good, "a", "gateway", grpc.StatusCode.PERMISSION_DENIED),
        }
        for case, (bearer, account, role, code) in cases.items():
            outcome = ads_stream(twin.xds_address, service_account=account, role=role, bearer=bearer,
                                 type_url=CLUSTER_TYPE)
            assert outcome.code == code, (case, outcome)
            assert outcome.responses == [], (case, "no resource may reach a refused stream")
        # a valid one is served; asking for the gateway's credential gets nothing but the proxy's own
        outcome = ads_stream(twin.xds_address, service_account="a", bearer=good,
                             names=("ingress-cert", "default", "ROOTCA"))
        got = {r.name for response in outcome.responses for r in response.resources}
        assert got == {"default", "ROOTCA"}, outcome
        log = twin.process.output() if twin.process else ""
        assert "refusing the xDS stream of node scripted-b-sidecar" in log
    finally:
        twin.stop()
    # the real proxies were served throughout
    assert f"URI={A_ID}" in strict.call_b()["xfcc"]


def test_no_private_key_in_debug_outputs_or_logs(strict: SecureMesh) -> None:
    cp = strict.control_plane
    keys = [p.read_bytes() for p in cp.ca_dir.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    assert keys, "the CA dir holds keys"
    secret_lines = {line for key in keys for line in key.decode().splitlines() if "-----" not in line}
    config = subprocess.run(
        [PYTHON, "-m", "controlplane", "config", "a", "secrets", "--json",
         "--admin-address", f"{LOOPBACK}:{cp.admin_port}"],
        capture_output=True, text=True, timeout=30, check=True).stdout
    outputs = {
        "config_dump a": json.dumps(cp.config_dump("a")),
        "config_dump b": json.dumps(cp.config_dump("b")),
        "controlplane config": config,
        "syncz": json.dumps(cp.syncz()),
        "metrics": http_request(cp.admin_port, "/metrics").body.decode(),
        "log": cp.process.output() if cp.process else "",
    }
    # the certificate is shown, the key is not (its place says it was redacted)
    assert "certificateChain" in config and "redacted" in config
    for where, text in outputs.items():
        assert "PRIVATE KEY" not in text, where
        # the key's base64 body, as PEM lines and as the base64 of the whole PEM (protobuf JSON bytes)
        assert not any(line in text for line in secret_lines), where
        for key in keys:
            assert base64.b64encode(key).decode()[:60] not in text, where


def test_certificates_rotate_under_steady_traffic(strict: SecureMesh) -> None:
    seen = [tuple(strict.b.cert_serials())]
    failures, requests = [], 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reply = strict.a.request("b.test", "/rotate")
        requests += 1
        if reply.status != 200 or f"URI={A_ID}" not in reply.json()["xfcc"]:
            failures.append((reply.status, reply.body[:200]))
        serials = tuple(strict.b.cert_serials())
        if serials != seen[-1]:
            seen.append(serials)
        time.sleep(0.1)
    assert not failures, f"{len(failures)} of {requests} requests failed: {failures[:3]}"
    assert len(seen) >= 3, f"b's certificate changed {len(seen) - 1} times in 60 s: {seen}"
    assert re.fullmatch(r"[0-9a-f]+", seen[-1][0]), seen


GATEWAY_ID = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"


def test_ingress_gateway_reaches_a_strict_service_over_mtls(strict: SecureMesh) -> None:
    reply = wait_until(lambda: _ok(http_request(strict.gateway_http, "/in", host="b.test")),
                       timeout=20, what="the ingress to route b.test")
    assert f"URI={GATEWAY_ID}" in reply.json()["xfcc"], reply.json()


def test_destination_rule_disable_toward_a_permissive_service(smesh: SecureMesh) -> None:
    disable = """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b-plaintext}
spec:
  host: b.test
  trafficPolicy:
    tls: {mode: DISABLE}
"""
    smesh.apply(peer_authentication("PERMISSIVE") + disable)
    try:
        assert smesh.call_b()["xfcc"] == "", "DestinationRule DISABLE: a calls b in plaintext"
        reply = http_request(smesh.gateway_http, "/in", host="b.test")
        assert reply.status == 200 and reply.json()["xfcc"] == ""
    finally:
        smesh.apply(peer_authentication("STRICT"))


def test_istio_mutual_gateway_server_needs_a_mesh_certificate(strict: SecureMesh, tmp_path: Path) -> None:
    import ssl
    from datetime import UTC, datetime, timedelta

    from controlplane.security.ca import CertificateAuthority

    ca = CertificateAuthority.load_or_create(strict.control_plane.ca_dir, now=datetime.now(UTC))
    client = ca.issue("spiffe://cluster.local/ns/default/sa/tester", ttl=timedelta(minutes=5),
                      now=datetime.now(UTC))
    (tmp_path / "c.pem").write_bytes(client.cert_chain_pem)
    (tmp_path / "k.pem").write_bytes(client.private_key_pem)
    context = ssl.create_default_context(cafile=str(strict.control_plane.ca_dir / "root-cert.pem"))
    context.check_hostname = False

    def get(with_cert: bool) -> bytes:
        ctx = context
        if with_cert:
            ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
        import socket

        with socket.create_connection((LOOPBACK, strict.gateway_mtls), timeout=3) as raw, \
                ctx.wrap_socket(raw) as tls:
            tls.sendall(b"GET /m HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n")
            return b"".join(iter(lambda: tls.recv(65536), b""))

    with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
        get(with_cert=False).decode()  # the server asks for a client certificate and gets none
        raise ssl.SSLError("answered without a client certificate")
    answer = wait_until(lambda: get(with_cert=True) or None, timeout=10, what="an answer over ISTIO_MUTUAL")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def _ok(reply: object) -> object | None:
    return reply if getattr(reply, "status", 0) == 200 else None
