"""PeerAuthentication resolution, auto mTLS decisions, the xDS credential check and key redaction (pure)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from google.protobuf import struct_pb2

from controlplane.api.loader import load_policy_texts
from controlplane.model import build_proxy
from controlplane.model.identity import ProxyIdentity, Role
from controlplane.model.peerauth import MtlsMode, applicable, mtls_mode
from controlplane.model.proxy_model import Cluster
from controlplane.ops.console.redact import SECRET_FIELDS as JSON_SECRET_FIELDS
from controlplane.translate.resources import CLUSTER, SECRET, Resources
from controlplane.translate.translator import translate_proxy
from controlplane.xds.auth import Refusal, TokenAuthenticator, bearer_token
from controlplane.xds.node import NodeError, identity_of
from controlplane.xds.redact import REDACTED, SECRET_FIELDS, redacted

SE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - address: 127.0.0.11
    serviceAccount: reviews
    labels: {app: reviews, security.istio.io/tlsMode: istio}
  - address: 127.0.0.12
    labels: {app: reviews-legacy}
"""


def pa(name: str, namespace: str, body: str) -> str:
    return f"""\
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {name}, namespace: {namespace}}}
spec:
{body}"""


SELECT_REVIEWS = "  selector: {matchLabels: {app: reviews}}\n"


def dr(tls: str) -> str:
    """A DestinationRule for reviews whose traffic policy is `tls: <tls>`."""
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: r}}
spec:
  host: reviews
  trafficPolicy:
    tls: {tls}
"""


def load(*docs: str) -> tuple[object, list[str]]:
    policy, diagnostics = load_policy_texts([("p.yaml", "".join(docs))])
    return policy, [str(d) for d in diagnostics]


def problems_with(*docs: str) -> list[str]:
    """The diagnostics of the ServiceEntry plus `docs`."""
    return load(SE, *docs)[1]


def reviews_cluster(policy: object) -> Cluster:
    """The sidecar model's cluster of the reviews service."""
    return next(c for c in build_proxy(policy, ProxyIdentity()).clusters  # type: ignore[arg-type]
                if c.ref.service.host == "reviews")


def translated(policy: object) -> Resources:
    return translate_proxy(build_proxy(policy, ProxyIdentity()))  # type: ignore[arg-type]


def modes(*docs: str, labels: dict[str, str], port: int | None = None) -> MtlsMode:
    policy, problems = load(SE, *docs)
    assert problems == []
    return mtls_mode(applicable(policy, "default", labels), port)  # type: ignore[arg-type]


def test_istio_precedence_port_workload_namespace_mesh_default() -> None:
    mesh = pa("default", "istio-system", "  mtls: {mode: STRICT}\n")
    namespace = pa("default", "default", "  mtls: {mode: UNSET}\n")
    workload = pa("r", "default", f"{SELECT_REVIEWS}  mtls: {{mode: PERMISSIVE}}\n"
                  "  portLevelMtls: {9080: {mode: DISABLE}}\n")
    assert modes(labels={"app": "reviews"}) is MtlsMode.PERMISSIVE  # nothing set: Istio's default
    assert modes(mesh, labels={"app": "reviews"}) is MtlsMode.STRICT
    assert modes(mesh, namespace, labels={"app": "reviews"}) is MtlsMode.STRICT  # UNSET inherits
    assert modes(mesh, workload, labels={"app": "reviews"}) is MtlsMode.PERMISSIVE
    assert modes(mesh, workload, labels={"app": "reviews"}, port=9080) is MtlsMode.DISABLE
    assert modes(mesh, workload, labels={"app": "other"}, port=9080) is MtlsMode.STRICT


def test_auto_mtls_only_toward_sidecars_and_never_toward_disable() -> None:
    policy, _ = load(SE)
    cluster = reviews_cluster(policy)
    assert [e.tls_mode for e in cluster.endpoints] == [True, False]
    assert cluster.tls is not None and cluster.tls.only_sidecars
    assert cluster.tls.subject_alt_names == ("spiffe://cluster.local/ns/default/sa/reviews",)
    assert cluster.tls.sni == "outbound_.9080_._.reviews"
    disabled, _ = load(SE, pa("r", "default", f"{SELECT_REVIEWS}  mtls: {{mode: DISABLE}}\n"))
    cluster = reviews_cluster(disabled)
    assert cluster.tls is None and not any(e.tls_mode for e in cluster.endpoints)


@pytest.mark.parametrize(("body", "message"), [
    ("  mtls: {mode: STRICTER}\n", "spec.mtls.mode: unsupported value 'STRICTER'"),
    ("  portLevelMtls: {9080: {mode: STRICT}}\n", "portLevelMtls requires a selector"),
    ("  selector: {matchLabels: {app: r}}\n  portLevelMtls: {http: {mode: STRICT}}\n", "portLevelMtls"),
    ("  mtls: {mode: STRICT}\n  jwtRules: []\n", "spec.jwtRules: unsupported field"),
])
def test_bad_peer_authentication_is_a_diagnostic_with_file_and_line(body: str, message: str) -> None:
    problems = problems_with(pa("bad", "default", body))
    assert len(problems) == 1 and problems[0].startswith("p.yaml:"), problems
    assert message in problems[0], problems


def test_second_namespace_wide_policy_is_reported() -> None:
    problems = problems_with(pa("a", "default", "  mtls: {mode: STRICT}\n"),
                             pa("b", "default", "  mtls: {mode: DISABLE}\n"))
    assert len(problems) == 1 and "PeerAuthentication/b" in problems[0], problems


@pytest.mark.parametrize(("tls", "message"), [
    ("{mode: MUTUAL}", "mode MUTUAL needs credentialName"),
    ("{mode: MUTUAL, credentialName: nope}", "no credential 'nope'"),
    ("{mode: ISTIO_MUTUAL, credentialName: x}", "credentialName has no meaning"),
    ("{mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [a]}", "contradict"),
    ("{mode: SIMPLE, caCrl: /etc/crl.pem}", "caCrl: unsupported field"),
])
def test_bad_destination_rule_tls(tls: str, message: str) -> None:
    problems = problems_with(dr(tls))
    assert any(message in p for p in problems), problems


def _node(**meta: object) -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update(meta)
    return base_pb2.Node(id="n", metadata=metadata)


def test_node_service_account_and_namespace_syntax() -> None:
    assert identity_of(_node(service_account="reviews")).service_account == "reviews"
    assert identity_of(_node()).service_account == "default"
    for bad in ({"service_account": "../x"}, {"namespace": "A B"}):
        with pytest.raises(NodeError):
            identity_of(_node(**bad))


@dataclass(frozen=True)
class Claims:
    namespace: str
    service_account: str
    role: str


def test_token_authenticator_refusals() -> None:
    def verify(token: str, now: datetime) -> Claims:
        if token != "good":
            raise ValueError("bad-signature")
        return Claims("default", "a", "sidecar")

    auth = TokenAuthenticator(verify, lambda: "td", clock=lambda: datetime.now(UTC))
    proxy = ProxyIdentity(service_account="a")
    DENIED = grpc.StatusCode.PERMISSION_DENIED
    assert auth.authenticate([("authorization", "Bearer good")], "n", proxy) == "spiffe://td/ns/default/sa/a"
    cases = [
        ([], proxy, grpc.StatusCode.UNAUTHENTICATED),
        ([("authorization", "Basic good")], proxy, grpc.StatusCode.UNAUTHENTICATED),
        ([("authorization", "Bearer forged")], proxy, grpc.StatusCode.UNAUTHENTICATED),
        ([("authorization", "Bearer good")], replace(proxy, service_account="b"), DENIED),
        ([("authorization", "Bearer good")], replace(proxy, role=Role.GATEWAY), DENIED),
        ([("authorization", "Bearer good")], replace(proxy, namespace="prod"), DENIED),
    ]
    for metadata, identity, code in cases:
        with pytest.raises(Refusal) as refused:
            auth.authenticate(metadata, "n", identity)
        assert refused.value.code == code, (metadata, identity)
    assert bearer_token([("Authorization", b"bearer  tok ")]) == "tok"


def test_redaction_removes_only_the_key() -> None:
    secret = secret_pb2.Secret(name="default", tls_certificate=common_pb2.TlsCertificate(
        certificate_chain=base_pb2.DataSource(inline_bytes=b"CERT"),
        private_key=base_pb2.DataSource(inline_bytes=b"-----BEGIN PRIVATE KEY-----")))
    shown = redacted(SECRET, secret)
    assert isinstance(shown, secret_pb2.Secret)
    assert shown.tls_certificate.private_key.inline_string == REDACTED
    assert shown.tls_certificate.certificate_chain.inline_bytes == b"CERT"
    assert secret.tls_certificate.private_key.inline_bytes.startswith(b"-----BEGIN"), "original untouched"
    root = secret_pb2.Secret(name="ROOTCA")
    assert redacted(SECRET, root) is root


def test_redaction_blanks_every_field_of_the_shared_secret_list() -> None:
    keys = secret_pb2.Secret(name="tickets", session_ticket_keys=common_pb2.TlsSessionTicketKeys(
        keys=[base_pb2.DataSource(inline_bytes=b"K" * 80), base_pb2.DataSource(filename="/k2")]))
    generic = secret_pb2.Secret(name="hmac", generic_secret=secret_pb2.GenericSecret(
        secret=base_pb2.DataSource(inline_string="s3cret")))
    password = secret_pb2.Secret(name="p12", tls_certificate=common_pb2.TlsCertificate(
        password=base_pb2.DataSource(inline_string="s3cret")))
    shown = [redacted(SECRET, secret) for secret in (keys, generic, password)]
    assert [key.inline_string for key in shown[0].session_ticket_keys.keys] == [REDACTED, REDACTED]
    assert shown[1].generic_secret.secret.inline_string == REDACTED
    assert shown[2].tls_certificate.password.inline_string == REDACTED
    assert not any(b"s3cret" in s.SerializeToString() or b"KKKK" in s.SerializeToString() for s in shown)
    # the console's JSON redaction knows the same fields, under their JSON names as well
    assert SECRET_FIELDS <= JSON_SECRET_FIELDS
    assert {"privateKey", "sessionTicketKeys", "genericSecret", "hmacSecret"} <= JSON_SECRET_FIELDS


def test_peer_authentication_selecting_nothing_is_a_warning_and_applies() -> None:
    policy, problems = load(SE, pa("later", "default", "  selector: {matchLabels: {app: nobody}}\n"
                                                       "  mtls: {mode: STRICT}\n"))
    assert len(problems) == 1 and problems[0].startswith("Warning p.yaml:"), problems
    assert "selects no known workload" in problems[0]
    assert any(obj.metadata.name == "later" for obj in policy)  # type: ignore[attr-defined]


def test_missing_destination_rule_credential_is_a_warning_and_never_falls_back() -> None:
    """Istio admits the rule before the secret exists; the cluster waits for SDS secrets that are never
    served (its connections fail) rather than talking plaintext or trusting the system CAs."""
    policy, problems = load(SE, dr("{mode: SIMPLE, credentialName: later}"))
    assert [p.split(": ", 1)[0] for p in problems] == ["Warning [IST0101] p.yaml:21"], problems
    assert "no credential 'later'" in problems[0]
    resources = translated(policy)
    text = str(resources.by_type[CLUSTER]["outbound|9080||reviews"])
    assert "later-cacert" in text and "ca-certificates.crt" not in text
    assert "later" not in resources.by_type[SECRET] and "later-cacert" not in resources.by_type[SECRET]


def test_destination_rule_certificate_files_become_secrets_naming_the_files() -> None:
    policy, problems = load(SE, dr(
        "{mode: MUTUAL, clientCertificate: /c/cert.pem, privateKey: /c/key.pem, caCertificates: /c/ca.pem}"))
    assert problems == []
    secrets = translated(policy).by_type[SECRET]
    name = "file-cert:/c/cert.pem~/c/key.pem~/c/ca.pem"
    cert = secrets[name]
    ca = secrets[f"{name}-cacert"]
    assert isinstance(cert, secret_pb2.Secret) and isinstance(ca, secret_pb2.Secret)
    assert cert.tls_certificate.certificate_chain.filename == "/c/cert.pem"
    assert cert.tls_certificate.private_key.filename == "/c/key.pem"
    assert ca.validation_context.trusted_ca.filename == "/c/ca.pem"


@pytest.mark.parametrize(("tls", "message"), [
    ("{mode: MUTUAL, clientCertificate: /c.pem}", "clientCertificate and privateKey go together"),
    ("{mode: MUTUAL, credentialName: x, caCertificates: /ca.pem}", "either credentialName or the"),
    ("{mode: ISTIO_MUTUAL, caCertificates: /ca.pem}", "no meaning with mode ISTIO_MUTUAL"),
    ("{mode: SIMPLE, caCertificates: /a~b.pem}", "caCertificates: unsupported value '/a~b.pem'"),
])
def test_bad_destination_rule_certificate_files(tls: str, message: str) -> None:
    problems = problems_with(dr(tls))
    assert len(problems) == 1 and message in problems[0], problems
