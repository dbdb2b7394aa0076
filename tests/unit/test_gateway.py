"""Gateways in the pure stages and at the file edge: server kinds, Istio's binding rules, credentials
(missing, unusable, rotated half-way), and what the watcher reacts to."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import watchfiles

from controlplane.api.gateway import Server, ServerKind
from controlplane.api.loader import load_policy_dir
from controlplane.model import build_proxy
from controlplane.model.gateway_bind import host_admitted
from controlplane.model.identity import ProxyIdentity, Role
from controlplane.policystore import PolicyStore
from controlplane.translate.resources import LISTENER, SECRET
from controlplane.translate.translator import translate_proxy
from controlplane.watch import PolicyFileFilter

ROOT = Path(__file__).resolve().parents[2]
INGRESS = ProxyIdentity(role=Role.GATEWAY, namespace="istio-system", labels=(("istio", "ingressgateway"),))

GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP, targetPort: 8080}
    hosts: ["*"]
  - port: {number: 443, name: https, protocol: HTTPS, targetPort: 8443}
    hosts: [api.test]
    tls: {mode: SIMPLE, credentialName: api-cert}
"""


def dev_certs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dev_certs", ROOT / "scripts" / "dev_certs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_cert(directory: Path, *hosts: str) -> None:
    certs = dev_certs()
    ca = certs.make_ca("unit CA")
    cert, key = certs.make_leaf(ca, list(hosts))
    certs.write_credential(directory, cert, key, None)


def server(protocol: str, tls: dict[str, object] | None = None) -> Server:
    return Server.model_validate(
        {"port": {"number": 1, "name": "p", "protocol": protocol}, "hosts": ["*"], "tls": tls}
    )


def test_server_kinds_follow_istio() -> None:
    assert server("HTTP").kind is ServerKind.HTTP
    assert server("HTTP", {"httpsRedirect": True}).kind is ServerKind.HTTP
    assert server("GRPC", {"mode": "SIMPLE", "credentialName": "c"}).kind is ServerKind.HTTPS
    assert server("HTTPS", {"mode": "MUTUAL", "credentialName": "c"}).kind is ServerKind.HTTPS
    # a tls block without mode is PASSTHROUGH (Istio's enum 0)
    assert server("HTTPS", {}).kind is ServerKind.PASSTHROUGH
    assert server("TLS", {"mode": "SIMPLE", "credentialName": "c"}).kind is ServerKind.TLS
    assert server("TCP").kind is ServerKind.TCP


@pytest.mark.parametrize(
    ("server_host", "host", "vs_ns", "admitted"),
    [
        ("*", "a.test", "x", True),
        ("*.example.com", "api.example.com", "x", True),
        ("*.example.com", "example.com", "x", False),
        ("api.test", "api.test", "x", True),
        ("shop/api.test", "api.test", "shop", True),
        ("shop/api.test", "api.test", "other", False),
        ("./api.test", "api.test", "istio-system", True),  # the Gateway's own namespace
        ("./api.test", "api.test", "shop", False),
        ("*/api.test", "api.test", "shop", True),
    ],
)
def test_host_binding_rules(server_host: str, host: str, vs_ns: str, admitted: bool) -> None:
    assert host_admitted(server_host, host, vs_ns, "istio-system") is admitted


def test_missing_credential_drops_only_that_server(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text(GATEWAY)
    policy, diagnostics = load_policy_dir(tmp_path)
    assert [(d.line, d.field) for d in diagnostics] == [(11, "spec.servers[1].tls.credentialName")]
    resources = translate_proxy(build_proxy(policy, INGRESS))
    assert sorted(resources.by_type[LISTENER]) == ["0.0.0.0_8080"]
    write_cert(tmp_path / "credentials" / "api-cert", "api.test")
    policy, diagnostics = load_policy_dir(tmp_path)
    assert diagnostics == []
    resources = translate_proxy(build_proxy(policy, INGRESS))
    assert sorted(resources.by_type[LISTENER]) == ["0.0.0.0_8080", "0.0.0.0_8443"]
    assert sorted(resources.by_type[SECRET]) == ["api-cert"]


def test_mismatched_key_is_a_diagnostic_on_the_file(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text(GATEWAY)
    write_cert(tmp_path / "credentials" / "api-cert", "api.test")
    write_cert(tmp_path / "other", "api.test")
    (tmp_path / "credentials" / "api-cert" / "tls.key").write_bytes(
        (tmp_path / "other" / "tls.key").read_bytes()
    )
    _, diagnostics = load_policy_dir(tmp_path)
    # the credential file, and the server that needed it
    assert [(Path(d.file).name, d.kind, d.field) for d in diagnostics] == [
        ("tls.crt", "Credential", "tls.crt"),
        ("gw.yaml", "Gateway", "spec.servers[1].tls.credentialName"),
    ]
    assert "unusable" in diagnostics[0].message


def test_store_keeps_the_last_usable_credential(tmp_path: Path) -> None:
    """A rotation caught half-way (new certificate, old key) must not take the listener down."""
    (tmp_path / "gw.yaml").write_text(GATEWAY)
    credential = tmp_path / "credentials" / "api-cert"
    write_cert(credential, "api.test")
    store = PolicyStore(tmp_path)
    first = store.load()
    assert first.diagnostics == []
    good = first.policy.credentials["api-cert"]
    write_cert(tmp_path / "next", "api.test")
    (credential / "tls.crt").write_bytes((tmp_path / "next" / "tls.crt").read_bytes())
    half = store.load()
    assert any(d.kind == "Credential" for d in half.diagnostics)
    assert half.policy.credentials["api-cert"] == good
    (credential / "tls.key").write_bytes((tmp_path / "next" / "tls.key").read_bytes())
    done = store.load()
    assert done.diagnostics == []
    assert done.policy.credentials["api-cert"].cert_chain == (tmp_path / "next" / "tls.crt").read_bytes()


def test_watcher_reacts_to_credential_files(tmp_path: Path) -> None:
    accept = PolicyFileFilter()
    cert = tmp_path / "credentials" / "api-cert" / "tls.crt"
    assert accept(watchfiles.Change.modified, str(cert))
    assert accept(watchfiles.Change.added, str(tmp_path / "credentials" / "api-cert" / "ca.crt"))
    assert not accept(watchfiles.Change.modified, str(tmp_path / "notes.txt"))
    assert not accept(watchfiles.Change.modified, str(tmp_path / "credentials" / "api-cert" / ".tls.crt.tmp"))
