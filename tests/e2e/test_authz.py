"""AuthorizationPolicy with real Envoys and real traffic (issue 13).

One secured control plane and three sidecars started once for the module: clients `frontend` and `other`
(their service accounts are their identities) and `reviews`, whose inbound listener fronts an app that
answers any method. The mesh is PERMISSIVE, so reviews' inbound listener has both an mTLS chain (the
clients call it with auto mTLS) and a plaintext one (the test's own raw requests). Each test writes the
AuthorizationPolicies it needs, waits until every proxy ACKed them, sends requests, and asks the dry-run
evaluator (ops/authz.py, via `controlplane authz` for some) the same question: both must agree.
The clients keep their connections to reviews open between tests (Envoy pools them), so every policy
change is also proven to apply to connections that were already open.
"""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import time
from collections.abc import Generator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from controlplane.api.loader import load_policy_dir
from controlplane.model import build_proxy
from controlplane.model.identity import ProxyIdentity, SocketAddress
from controlplane.ops.authz import Request, evaluate
from tests.e2e.live_support import atomic_write
from tests.e2e.mesh import PYTHON, ControlPlane, get_json
from tests.e2e.security_support import MeshSidecar, token
from tests.harness import LOOPBACK, ProcessGroup, free_port, wait_until

pytestmark = pytest.mark.e2e

SPIFFE = "spiffe://cluster.local/ns/default/sa/"
# the SNI a client sidecar sends to reviews over auto mTLS (Istio's, model/mtls.py `istio_sni`)
CLIENT_SNI = "outbound_.80_._.reviews.test"


class _AnyMethod(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"method": self.command, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class App:
    def __init__(self) -> None:
        self.server = ThreadingHTTPServer((LOOPBACK, 0), _AnyMethod)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        import threading

        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def services(inbound: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [reviews.test]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - address: {LOOPBACK}
    ports: {{http: {inbound}}}
    serviceAccount: reviews
    labels: {{app: reviews, security.istio.io/tlsMode: istio}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-system}}
spec:
  mtls: {{mode: PERMISSIVE}}
"""


def gateway(port: int, tcp_port: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: ingress, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: ["*"]
  - port: {{number: {tcp_port}, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews-ingress}}
spec:
  hosts: [reviews.test]
  gateways: [istio-system/ingress]
  http:
  - route:
    - destination: {{host: reviews.test, port: {{number: 80}}}}
  tcp:
  - match: [{{port: {tcp_port}}}]
    route:
    - destination: {{host: reviews.test, port: {{number: 80}}}}
"""


def policy(name: str, spec: str, *, selector: bool = True) -> str:
    text = f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}}}\nspec:\n"
    if selector:
        text += "  selector: {matchLabels: {app: reviews}}\n"
    return text + "".join(f"  {line}\n" for line in spec.strip("\n").splitlines())


@dataclass
class Reply:
    status: int
    body: bytes


def send(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> Reply:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        conn.request(method, path, body=b"x" if method == "POST" else None,
                     headers={"Host": "reviews.test", **(headers or {})})
        response = conn.getresponse()
        return Reply(response.status, response.read())
    finally:
        conn.close()


@dataclass
class AuthzMesh:
    control_plane: ControlPlane
    clients: dict[str, MeshSidecar]
    reviews: MeshSidecar
    inbound: int
    gateway_port: int
    app: App
    config_dir: Path
    gateway_tcp_port: int

    def apply(self, *policies: str) -> None:
        atomic_write(self.config_dir / "authz.yaml", "---\n".join(policies) or "# none\n")
        self.control_plane.reload()

        def synced() -> bool:
            nodes = {s["node"]: s for s in self.control_plane.syncz()}
            return all(nodes.get(n, {}).get("synced") for n in ("frontend", "other", "reviews", "ingress"))
        wait_until(synced, timeout=30, what="every proxy to ACK the current policy")

    def identity(self) -> ProxyIdentity:
        return ProxyIdentity(labels=(("app", "reviews"),),
                             inbound_address=SocketAddress(LOOPBACK, self.inbound),
                             app_ports=(self.app.port,), service_account="reviews")

    def call(self, client: str | None, method: str = "GET", path: str = "/api/books",
             headers: dict[str, str] | None = None, claims: dict[str, Any] | None = None,
             sni: str | None = None) -> int:
        """Status of one real request (from a client sidecar over mTLS, or plaintext from the test when
        `client` is None), after checking that the evaluator predicts the same outcome."""
        if client is None:
            reply = send(self.inbound, method, path, headers)
        else:
            reply = send(self.clients[client].outbound_port, method, path, headers)
        if reply.status == 401:
            return 401  # the JWT failed verification: not the evaluator's question (it has no keys)
        assert reply.status in (200, 403), (reply.status, reply.body[:300])
        if reply.status == 403:
            assert reply.body == b"RBAC: access denied", reply.body
        loaded, diagnostics = load_policy_dir(self.config_dir)
        assert not diagnostics, diagnostics
        model = build_proxy(loaded, self.identity())
        assert model.inbound is not None
        request = Request(method=method, path=path, host="reviews.test", port=self.inbound,
                          headers=tuple((headers or {}).items()),
                          peer=SPIFFE + client if client else None, source_ip=LOOPBACK, claims=claims,
                          sni=(CLIENT_SNI if client else "") if sni is None else sni)
        decision = evaluate(model.inbound.authz, request)
        assert decision.allowed == (reply.status == 200), (client, method, path, decision, reply.status)
        return reply.status


@pytest.fixture(scope="module")
def amesh(envoy_binary: str, module_processes: ProcessGroup,
          tmp_path_factory: pytest.TempPathFactory) -> Generator[AuthzMesh, None, None]:
    work = tmp_path_factory.mktemp("authz")
    config_dir = work / "policy"
    config_dir.mkdir()
    app = App()
    inbound = free_port()
    (config_dir / "services.yaml").write_text(services(inbound))
    (config_dir / "authz.yaml").write_text("# none yet\n")
    gateway_port, gateway_tcp_port = free_port(), free_port()
    (config_dir / "gateway.yaml").write_text(gateway(gateway_port, gateway_tcp_port))
    cp = ControlPlane(module_processes, config_dir, secure=True, serve_args=("--xds-tls",))
    cp.start()
    sidecars: dict[str, MeshSidecar] = {}
    for name in ("frontend", "other", "reviews", "ingress"):
        token_file = work / f"{name}.token"
        extra: dict[str, Any] = {"inbound_port": inbound, "app_port": app.port} if name == "reviews" else {}
        account, labels = name, f"app={name}"
        if name == "ingress":
            account, labels = "istio-ingressgateway", "istio=ingressgateway"
            extra = {"role": "gateway", "namespace": "istio-system"}
        namespace, role = extra.get("namespace", "default"), extra.get("role", "sidecar")
        token_file.write_text(token(cp.ca_dir, service_account=account, namespace=namespace, role=role))
        sidecar = MeshSidecar(envoy_binary, module_processes, work, name, cp.xds_address,
                              service_account=account, token_file=token_file, labels=labels,
                              xds_ca=cp.ca_dir / "root-cert.pem", **extra)
        sidecar.start()
        sidecars[name] = sidecar
    mesh = AuthzMesh(cp, {n: sidecars[n] for n in ("frontend", "other")}, sidecars["reviews"], inbound,
                     gateway_port, app, config_dir, gateway_tcp_port)
    try:
        mesh.apply()
        wait_until(lambda: send(sidecars["frontend"].outbound_port, "GET", "/").status == 200, timeout=30,
                   what="frontend -> reviews over mTLS")
        yield mesh
    finally:
        app.close()


FRONTEND_GET_API = policy("frontend-get", """
action: ALLOW
rules:
- from: [{source: {principals: [cluster.local/ns/default/sa/frontend]}}]
  to: [{operation: {methods: [GET], paths: ["/api/*"]}}]
""")


def test_only_frontend_may_get_the_api(amesh: AuthzMesh) -> None:
    amesh.apply(FRONTEND_GET_API)
    assert amesh.call("frontend", "GET", "/api/books") == 200
    assert amesh.call("other", "GET", "/api/books") == 403
    assert amesh.call("frontend", "POST", "/api/books") == 403
    assert amesh.call("frontend", "GET", "/admin") == 403


def test_deny_wins_over_allow(amesh: AuthzMesh) -> None:
    deny = policy("deny-secret", """
action: DENY
rules: [{to: [{operation: {paths: ["/api/secret*"]}}]}]
""")
    amesh.apply(FRONTEND_GET_API, deny)
    assert amesh.call("frontend", "GET", "/api/books") == 200
    assert amesh.call("frontend", "GET", "/api/secret/key") == 403
    # the denial is counted per policy rule (docs/authz.md, Metrics)
    stats = amesh.reviews.stats()
    denied = {k: v for k, v in stats.items() if "policy[deny-secret]" in k and k.endswith(".denied")}
    assert denied and max(denied.values()) >= 1, sorted(k for k in stats if "rbac" in k)
    # and per filter, under the prefixes docs/authz.md names (Envoy takes them from the filter's config)
    assert stats.get("http.inbound_http.rbac.deny_.denied", 0) >= 1, sorted(k for k in stats if "rbac" in k)


def test_allow_nothing_denies_all(amesh: AuthzMesh) -> None:
    amesh.apply(policy("allow-nothing", "{}", selector=False))
    assert amesh.call("frontend") == 403
    assert amesh.call("other") == 403
    assert amesh.call(None) == 403


def test_namespace_and_workload_policies_combine(amesh: AuthzMesh) -> None:
    namespace_wide = policy("ns-other-get", """
rules:
- from: [{source: {principals: [cluster.local/ns/default/sa/other]}}]
  to: [{operation: {methods: [GET]}}]
""", selector=False)
    amesh.apply(namespace_wide, FRONTEND_GET_API)
    assert amesh.call("other", "GET", "/anything") == 200
    assert amesh.call("frontend", "GET", "/api/books") == 200
    assert amesh.call("frontend", "GET", "/anything") == 403
    assert amesh.call("other", "POST", "/anything") == 403


def test_not_paths_decide(amesh: AuthzMesh) -> None:
    amesh.apply(policy("not-private", """
rules:
- from: [{source: {namespaces: [default]}}]
  to: [{operation: {notPaths: ["/private*", "/v1/{*}/admin"]}}]
"""))
    assert amesh.call("frontend", "GET", "/public") == 200
    assert amesh.call("frontend", "GET", "/private/x") == 403
    assert amesh.call("frontend", "GET", "/v1/shop/admin") == 403
    assert amesh.call("frontend", "GET", "/v1/shop/items") == 200


def test_header_condition_decides(amesh: AuthzMesh) -> None:
    amesh.apply(policy("team-blue", """
rules:
- when: [{key: "request.headers[x-team]", values: [blue]}]
"""))
    assert amesh.call("frontend", headers={"x-team": "blue"}) == 200
    assert amesh.call("frontend", headers={"x-team": "red"}) == 403
    assert amesh.call("frontend") == 403


def test_ip_blocks_decide(amesh: AuthzMesh) -> None:
    amesh.apply(policy("loopback", """
rules: [{from: [{source: {ipBlocks: [127.0.0.1/32]}}]}]
"""))
    assert amesh.call("frontend") == 200
    amesh.apply(policy("elsewhere", """
rules: [{from: [{source: {ipBlocks: [10.0.0.0/8]}}]}]
"""))
    assert amesh.call("frontend") == 403


def test_plaintext_never_matches_a_principal_rule(amesh: AuthzMesh) -> None:
    amesh.apply(policy("any-principal", """
rules:
- from: [{source: {principals: ["*"]}}]
- from: [{source: {principals: [cluster.local/ns/default/sa/frontend]}}]
"""))
    assert amesh.call("frontend") == 200
    # the same port over plaintext (PERMISSIVE accepts it): no certificate, no principal
    assert amesh.call(None) == 403
    # a forged client-certificate header changes nothing: identity is the TLS peer's, not a header
    assert amesh.call(None, headers={"x-forwarded-client-cert": f"URI={SPIFFE}frontend"}) == 403


def test_dry_run_cli_explains_the_decision(amesh: AuthzMesh) -> None:
    amesh.apply(FRONTEND_GET_API)
    assert amesh.call("other") == 403
    argv = [PYTHON, "-m", "controlplane", "authz", "reviews", "--admin-address",
            f"{LOOPBACK}:{amesh.control_plane.admin_port}", "--path", "/api/books"]
    allowed = subprocess.run([*argv, "--from", f"{SPIFFE}frontend"], capture_output=True, text=True,
                             timeout=30, check=False)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.startswith("ALLOW"), allowed.stdout
    assert "default/frontend-get" in allowed.stdout and "authz.yaml:" in allowed.stdout
    denied = subprocess.run([*argv, "--from", f"{SPIFFE}other"], capture_output=True, text=True,
                            timeout=30, check=False)
    assert denied.returncode == 1, denied.stderr
    assert denied.stdout.startswith("DENY"), denied.stdout


def test_a_new_invalid_policy_fails_closed(amesh: AuthzMesh) -> None:
    """A DENY policy that never was valid is enforced as deny-all for what it selects, an invalid ALLOW
    policy as allow-nothing: requests are denied, never let through because the policy was dropped."""
    amesh.apply(policy("bad-deny", """
action: DENY
rules: [{to: [{operation: {paths: ["/a{*}b"]}}]}]
"""))
    for client in ("frontend", "other", None):
        reply = send(amesh.clients[client].outbound_port if client else amesh.inbound, "GET", "/api/books")
        assert (reply.status, reply.body) == (403, b"RBAC: access denied"), (client, reply)
    # the dry run says the same, naming the stand-in; the server's diagnostics say what it enforces
    loaded, diagnostics = load_policy_dir(amesh.config_dir)
    assert any("must be a whole path segment" in d.message for d in diagnostics), diagnostics
    model = build_proxy(loaded, amesh.identity())
    assert model.inbound is not None
    decision = evaluate(model.inbound.authz, Request(peer=SPIFFE + "frontend", path="/api/books"))
    assert not decision.allowed and "enforced as deny-all" in decision.reason, decision
    state = get_json(amesh.control_plane.admin_port, "/debug/config")
    assert "enforced as deny-all (fail closed)" in json.dumps(state), state
    # an invalid ALLOW policy next to a valid one: only what the valid one allows passes. (A file with an
    # invalid object deletes nothing it served, policystore.py: a valid version of it removes bad-deny.)
    amesh.apply(FRONTEND_GET_API)
    amesh.apply(FRONTEND_GET_API, policy("bad-allow", """
rules: [{to: [{operation: {ports: [http]}}]}]
"""))
    assert send(amesh.clients["frontend"].outbound_port, "GET", "/api/books").status == 200
    assert send(amesh.clients["other"].outbound_port, "GET", "/api/books").status == 403


def test_audit_passes_and_is_counted(amesh: AuthzMesh) -> None:
    """AUDIT: Envoy shadow rules — the request is served, the shadow denial is counted (per rule too)."""
    amesh.apply(policy("audit-admin", """
action: AUDIT
rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
"""))
    before = amesh.reviews.stats()
    prefix = "http.inbound_http.rbac.istio_audit_."
    rule = prefix + "policy.ns[default]-policy[audit-admin]-rule[0].shadow_denied"
    assert amesh.call("frontend", "GET", "/admin/users") == 200
    assert amesh.call("frontend", "GET", "/api/books") == 200
    after = amesh.reviews.stats()
    assert after.get(prefix + "shadow_denied", 0) - before.get(prefix + "shadow_denied", 0) == 1, \
        sorted((k, v) for k, v in after.items() if "rbac" in k)
    assert after.get(rule, 0) - before.get(rule, 0) == 1, sorted(k for k in after if "istio_audit" in k)
    assert after.get(prefix + "shadow_allowed", 0) - before.get(prefix + "shadow_allowed", 0) == 1


def test_connection_sni_condition_decides(amesh: AuthzMesh) -> None:
    """`connection.sni` is the TLS SNI of the downstream connection: the client sidecars send Istio's
    outbound SNI over mTLS; a plaintext request has none."""
    amesh.apply(policy("sni", """
rules: [{when: [{key: connection.sni, values: ["outbound_.80_.*"]}]}]
"""))
    assert amesh.call("frontend") == 200
    assert amesh.call(None) == 403
    amesh.apply(policy("sni", """
rules: [{when: [{key: connection.sni, values: [outbound_.80_._.ratings.test]}]}]
"""))
    assert amesh.call("frontend") == 403


ISSUER = "https://issuer.test"


def _b64(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode()


def test_jwt_valid_passes_tampered_401_missing_403(amesh: AuthzMesh) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    jwks = json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
                                 "x": _b64(numbers.x), "y": _b64(numbers.y)}]})
    authn = f"""\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  jwtRules:
  - issuer: {ISSUER}
    audiences: [reviews]
    jwks: '{jwks}'
"""
    require = policy("require-jwt", f"""
rules:
- from: [{{source: {{requestPrincipals: ["{ISSUER}/*"]}}}}]
  when: [{{key: "request.auth.claims[group]", values: [readers]}}]
""")
    amesh.apply(authn, require)
    # Requests on new connections (the test's own, plaintext: request principals need no mTLS). The
    # jwt_authn filter holds the keys, so a RequestAuthentication change is a listener update and reaches
    # connections opened after it (docs/security.md); AuthorizationPolicy changes reach open ones too.
    claims = {"iss": ISSUER, "sub": "alice", "aud": "reviews", "group": "readers",
              "exp": int(time.time()) + 600}
    good = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})
    assert amesh.call(None, headers={"authorization": f"Bearer {good}"}, claims=claims) == 200
    head, payload, signature = good.split(".")
    forged = dict(claims, group="admins")
    forged_payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    assert forged_payload != payload
    tampered = f"{head}.{forged_payload}.{signature}"
    assert amesh.call(None, headers={"authorization": f"Bearer {tampered}"}) == 401
    # no token: jwt_authn lets it through (Istio), the policy requiring a request principal denies it
    assert amesh.call(None) == 403
    wrong_group = dict(claims, group="writers")
    other = jwt.encode(wrong_group, key, algorithm="ES256", headers={"kid": "k1"})
    assert amesh.call(None, headers={"authorization": f"Bearer {other}"}, claims=wrong_group) == 403


def test_gateway_enforces_the_policies_selecting_its_labels(amesh: AuthzMesh) -> None:
    deny = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress-no-admin, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
"""
    amesh.apply(deny)
    assert send(amesh.gateway_port, "GET", "/api/books").status == 200
    refused = send(amesh.gateway_port, "GET", "/admin/users")
    assert (refused.status, refused.body) == (403, b"RBAC: access denied")
    # the sidecars are not selected: frontend reaches /admin on reviews directly
    assert amesh.call("frontend", "GET", "/admin/users") == 200


def _tcp_status(port: int) -> int | None:
    """Status of an HTTP request sent through the gateway's TCP server; None: the connection was closed."""
    try:
        return send(port, "GET", "/api/books").status
    except (ConnectionError, http.client.HTTPException):
        return None


def test_gateway_tcp_server_closes_denied_connections(amesh: AuthzMesh) -> None:
    """On a TCP server (tcp_proxy) network RBAC decides; HTTP-only fields follow Istio's TCP rules: a DENY
    rule is evaluated without them (here: deny-all), an ALLOW rule using them matches nothing."""
    def ingress(name: str, spec: str) -> str:
        return (f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                f"metadata: {{name: {name}, namespace: istio-system}}\nspec:\n"
                f"  selector: {{matchLabels: {{istio: ingressgateway}}}}\n"
                + "".join(f"  {line}\n" for line in spec.strip("\n").splitlines()))
    amesh.apply()
    wait_until(lambda: _tcp_status(amesh.gateway_tcp_port) == 200, timeout=15, what="TCP through the gateway")
    amesh.apply(ingress("no-admin", """
action: DENY
rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
"""))
    assert _tcp_status(amesh.gateway_tcp_port) is None
    assert send(amesh.gateway_port, "GET", "/api/books").status == 200
    amesh.apply(ingress("http-only", """
rules: [{to: [{operation: {methods: [GET]}}]}]
"""))
    assert _tcp_status(amesh.gateway_tcp_port) is None
    assert send(amesh.gateway_port, "GET", "/api/books").status == 200
    amesh.apply(ingress("loopback", """
rules: [{from: [{source: {ipBlocks: [127.0.0.1/32]}}]}]
"""))
    assert _tcp_status(amesh.gateway_tcp_port) == 200


class _JwksServer(ThreadingHTTPServer):
    """Serves `body` (a JWKS) at /keys and counts the fetches (proof that Envoy fetched it)."""

    daemon_threads = True

    def __init__(self, body: bytes) -> None:
        super().__init__((LOOPBACK, 0), _Jwks)
        self.body = body
        self.fetches = 0


class _Jwks(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server: _JwksServer

    def do_GET(self) -> None:
        found = self.path == "/keys"
        body = self.server.body if found else b""
        self.server.fetches += found
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_jwks_uri_is_fetched_by_envoy_through_the_generated_cluster(amesh: AuthzMesh) -> None:
    """jwksUri (plain http on an OS port): Envoy fetches the keys through the `jwks|host|port` cluster
    the control plane generates; a token signed by the served key passes, one by another key gets 401."""
    import threading

    key, stranger = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    server = _JwksServer(json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
                                               "x": _b64(numbers.x), "y": _b64(numbers.y)}]}).encode())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        amesh.apply(f"""\
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt-remote}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  jwtRules:
  - issuer: {ISSUER}
    audiences: [reviews]
    jwksUri: http://{LOOPBACK}:{port}/keys
    timeout: 3s
""")
        cluster = f"jwks|{LOOPBACK}|{port}"
        config = get_json(amesh.reviews.admin_port, "/config_dump?resource=dynamic_active_clusters")
        assert cluster in json.dumps(config), "reviews' Envoy has no generated JWKS cluster"
        # Envoy fetches at listener start (async_fetch); the listener serves once the fetch is done.
        wait_until(lambda: server.fetches > 0, timeout=30, what="Envoy to fetch the JWKS")
        claims = {"iss": ISSUER, "sub": "alice", "aud": "reviews", "exp": int(time.time()) + 600}
        good = jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})
        bad = jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": "k1"})

        def served() -> bool:
            return send(amesh.inbound, "GET", "/api/books",
                        {"authorization": f"Bearer {good}"}).status == 200
        # the new listener (with the remote provider) may still be draining in the old one: poll
        wait_until(served, timeout=30, what="a token signed by the fetched key to pass")
        assert amesh.call(None, headers={"authorization": f"Bearer {good}"}, claims=claims) == 200
        assert amesh.call(None, headers={"authorization": f"Bearer {bad}"}) == 401
        assert amesh.call(None) == 200  # no token and no policy requiring one: passes (Istio)
    finally:
        amesh.apply()
        server.shutdown()
        server.server_close()
        thread.join(5)
