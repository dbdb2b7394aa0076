"""AuthorizationPolicy scopes (model/authz.py), the dry-run evaluator (ops/authz.py), fail-closed reloads."""

from __future__ import annotations

from pathlib import Path

from controlplane.api.loader import load_policy_texts
from controlplane.model import build_proxy
from controlplane.model.authz import Action, Authz, build_authz
from controlplane.model.identity import ProxyIdentity, Role, SocketAddress
from controlplane.ops.authz import Request, evaluate
from controlplane.policystore import PolicyStore

FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"


def ap(name: str, spec: str, namespace: str = "default") -> str:
    return (f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n")


def authz(*docs: str, namespace: str = "default", labels: dict[str, str] | None = None) -> Authz | None:
    policy, diagnostics = load_policy_texts([("p.yaml", "---\n".join(docs))])
    assert not diagnostics, [str(d) for d in diagnostics]
    return build_authz(policy, namespace, labels if labels is not None else {"app": "reviews"})


def names(model: Authz | None) -> list[str]:
    return [] if model is None else [f"{p.ref.namespace}/{p.ref.name}" for p in model.policies]


def test_scopes_mesh_namespace_and_selector() -> None:
    docs = (
        ap("mesh", "{action: DENY, rules: [{to: [{operation: {paths: [/x]}}]}]}", namespace="istio-system"),
        ap("mesh-selected", "{selector: {matchLabels: {app: reviews}}}", namespace="istio-system"),
        ap("ns", "{}"),
        ap("workload", "{selector: {matchLabels: {app: reviews}}}"),
        ap("other-workload", "{selector: {matchLabels: {app: ratings}}}"),
        ap("other-ns", "{}", namespace="shop"),
    )
    assert names(authz(*docs)) == ["default/ns", "default/workload", "istio-system/mesh",
                                   "istio-system/mesh-selected"]
    shop = authz(*docs, namespace="shop", labels={"app": "ratings"})
    assert names(shop) == ["istio-system/mesh", "shop/other-ns"]
    assert authz(ap("x", "{}", namespace="shop")) is None


def test_gateway_gets_the_policies_selecting_its_labels() -> None:
    policy, _ = load_policy_texts([("p.yaml", ap("gw", "{selector: {matchLabels: {istio: ingressgateway}}}",
                                                 namespace="istio-system"))])
    gateway = ProxyIdentity(role=Role.GATEWAY, namespace="istio-system",
                            labels=(("istio", "ingressgateway"),))
    model = build_proxy(policy, gateway)
    assert model.gateway is not None and names(model.gateway.authz) == ["istio-system/gw"]
    sidecar = ProxyIdentity(inbound_address=SocketAddress("127.0.0.1", 15006), app_ports=(9101,))
    inbound = build_proxy(policy, sidecar).inbound
    assert inbound is not None and inbound.authz is None


def test_deny_first_then_allow_and_rule_location() -> None:
    model = authz(
        ap("allow-frontend",
           "{rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/frontend]}}]}]}"),
        ap("deny-post", "{action: DENY, rules: [{to: [{operation: {methods: [POST]}}]}]}"),
    )
    assert model is not None and [p.action for p in model.policies] == [Action.ALLOW, Action.DENY]
    allowed = evaluate(model, Request(peer=FRONTEND))
    assert allowed.allowed and allowed.policy is not None and allowed.policy.ref.name == "allow-frontend"
    assert allowed.where == "p.yaml:4"
    denied = evaluate(model, Request(method="POST", peer=FRONTEND))
    assert not denied.allowed and denied.policy is not None and denied.policy.ref.name == "deny-post"
    assert not evaluate(model, Request(peer="spiffe://cluster.local/ns/default/sa/other")).allowed


def test_allow_nothing_and_deny_all() -> None:
    assert not evaluate(authz(ap("nothing", "{}")), Request(peer=FRONTEND)).allowed
    assert not evaluate(authz(ap("all", "{action: DENY, rules: [{}]}")), Request()).allowed
    assert evaluate(authz(ap("audit", "{action: AUDIT, rules: [{}]}")), Request()).allowed
    assert evaluate(None, Request()).allowed


def test_plaintext_has_no_principal() -> None:
    principals = authz(ap("p", '{rules: [{from: [{source: {principals: ["*"]}}]}]}'))
    assert evaluate(principals, Request(peer=FRONTEND)).allowed
    assert not evaluate(principals, Request(peer=None)).allowed
    namespaces = authz(ap("n", "{rules: [{from: [{source: {namespaces: [default]}}]}]}"))
    assert evaluate(namespaces, Request(peer=FRONTEND)).allowed
    assert not evaluate(namespaces, Request(peer="spiffe://cluster.local/ns/defaults/sa/x")).allowed
    assert not evaluate(namespaces, Request(peer=None)).allowed


def test_paths_wildcards_and_templates() -> None:
    model = authz(ap("p", '{rules: [{to: [{operation: {paths: ["/api/*", "*.css", "/v1/{*}/items/{**}"],'
                          ' notPaths: ["/api/admin*"]}}]}]}'))
    for path, expected in [("/api/books", True), ("/api/admin/x", False), ("/site.css", True),
                           ("/v1/shop/items/a/b", True), ("/v1/a/b/items/c", False),
                           ("/v1/shop/items", False),
                           ("/api/books?q=1", True), ("/other", False)]:
        assert evaluate(model, Request(path=path)).allowed is expected, path


def test_invalid_edit_keeps_the_last_valid_policy(tmp_path: Path) -> None:
    """Fail closed: a broken edit of a DENY policy leaves the previous DENY in effect."""
    store = PolicyStore(tmp_path)
    (tmp_path / "authz.yaml").write_text(ap("deny-all", "{action: DENY, rules: [{}]}"))
    assert [o.metadata.name for o in store.load().policy] == ["deny-all"]
    broken = "{action: DENY, rules: [{to: [{operation: {ports: [x]}}]}]}"
    (tmp_path / "authz.yaml").write_text(ap("deny-all", broken))
    result = store.load()
    assert result.diagnostics and [o.metadata.name for o in result.policy] == ["deny-all"]
    model = build_authz(result.policy, "default", {})
    assert model is not None and not evaluate(model, Request()).allowed


def _stand_in(spec: str, namespace: str = "default", labels: dict[str, str] | None = None) -> Authz | None:
    """The policy a proxy enforces for an invalid AuthorizationPolicy that never had a valid version."""
    policy, diagnostics = load_policy_texts([("p.yaml", ap("bad", spec))])
    assert any(d.is_error for d in diagnostics), [str(d) for d in diagnostics]
    return build_authz(policy, namespace, labels if labels is not None else {"app": "reviews"})


def test_a_new_invalid_policy_fails_closed() -> None:
    """Never "allow everything" because a policy failed to load: ALLOW → allow-nothing, DENY, CUSTOM and
    an unknown action → deny-all, each for the scope the object names; AUDIT enforces nothing."""
    selected = "selector: {matchLabels: {app: reviews}}, "
    allow = _stand_in("{" + selected + "rules: [{to: [{operation: {ports: [x]}}]}]}")
    assert allow is not None and [(p.action, p.fail_closed, p.rules) for p in allow.policies] == [
        (Action.ALLOW, "allow-nothing", ())]
    assert not evaluate(allow, Request(peer=FRONTEND)).allowed
    # another ALLOW policy still allows what it allows: the stand-in only adds nothing
    policy, _ = load_policy_texts([("p.yaml", "---\n".join([
        ap("bad", "{rules: [{to: [{operation: {ports: [x]}}]}]}"),
        ap("frontend", "{rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/frontend]}}]}]}"),
    ]))])
    both = build_authz(policy, "default", {})
    assert evaluate(both, Request(peer=FRONTEND)).allowed
    assert not evaluate(both, Request()).allowed
    for spec in ("{" + selected + 'action: DENY, rules: [{to: [{operation: {paths: ["/a{*}b"]}}]}]}',
                 "{" + selected + "action: CUSTOM, provider: {name: ext}, rules: [{}]}",
                 "{" + selected + "action: PERMIT}",
                 '{action: DENY, rules: [{when: [{key: "destination.ip", values: [10.0.0.1]}]}]}'):
        deny = _stand_in(spec)
        assert deny is not None and [p.fail_closed for p in deny.policies] == ["deny-all"], spec
        decision = evaluate(deny, Request(peer=FRONTEND, path="/anything"))
        assert not decision.allowed and "the policy is invalid: enforced as deny-all" in decision.reason
    # the stand-in keeps the object's scope: a workload the selector does not pick is not affected
    assert _stand_in("{" + selected + "action: DENY, rules: [{to: [{}]}]}", labels={"app": "ratings"}) is None
    assert _stand_in("{action: AUDIT, rules: [{to: [{}]}]}") is None


def test_an_unreadable_selector_widens_the_stand_in_to_the_namespace() -> None:
    wide = _stand_in("{selector: {matchLabels: [app]}, action: DENY, rules: [{}]}", labels={"app": "x"})
    assert wide is not None and wide.policies[0].fail_closed.startswith("deny-all, for the whole namespace")
    assert not evaluate(wide, Request()).allowed


def test_policystore_enforces_the_stand_in_until_a_valid_version(tmp_path: Path) -> None:
    store = PolicyStore(tmp_path)
    (tmp_path / "authz.yaml").write_text(ap("deny-admin", "{action: DENY, rules: [{to: [{operation: "
                                                          "{paths: [/admin], ports: [x]}}]}]}"))
    first = store.load()
    notes = [d.message for d in first.diagnostics if "fail closed" in d.message]
    assert notes == ["AuthorizationPolicy/default/deny-admin is invalid and never valid; enforced as "
                     "deny-all (fail closed)"], [str(d) for d in first.diagnostics]
    assert first.kept == [] and first.excluded == ["AuthorizationPolicy/default/deny-admin"]
    assert not evaluate(build_authz(first.policy, "default", {}), Request(path="/public")).allowed
    # a half-written file (cut in a line) keeps what it served: the stand-in, not allow-all
    text = (tmp_path / "authz.yaml").read_text()
    (tmp_path / "authz.yaml").write_text(text[:40])
    assert not evaluate(build_authz(store.load().policy, "default", {}), Request(path="/public")).allowed
    (tmp_path / "authz.yaml").write_text(ap("deny-admin", "{action: DENY, rules: [{to: [{operation: "
                                                          "{paths: [/admin]}}]}]}"))
    fixed = build_authz(store.load().policy, "default", {})
    assert evaluate(fixed, Request(path="/public")).allowed
    assert not evaluate(fixed, Request(path="/admin")).allowed
    # from now on a broken edit keeps that valid version, not the stand-in
    (tmp_path / "authz.yaml").write_text(ap("deny-admin", "{action: DENY, rules: [{to: [{}]}]}"))
    kept = store.load()
    assert kept.kept == ["AuthorizationPolicy/default/deny-admin"]
    assert evaluate(build_authz(kept.policy, "default", {}), Request(path="/public")).allowed


def test_tcp_rules_follow_istio_semantics() -> None:
    """translate/rbac_tcp.py: HTTP-only fields make an ALLOW rule match nothing on TCP and are dropped
    from a DENY rule (broader); rules without them are unchanged."""
    from controlplane.translate.rbac_tcp import tcp_rule

    model = authz(ap("p", '{rules: [{from: [{source: {requestPrincipals: ["*"], ipBlocks: [10.0.0.0/8]}}],'
                          ' to: [{operation: {methods: [GET], ports: ["80"]}}],'
                          ' when: [{key: "request.headers[x]", values: [y]},'
                          ' {key: source.ip, values: [10.1.1.1]}]},'
                          ' {from: [{source: {ipBlocks: [10.0.0.0/8]}}]}]}'))
    assert model is not None
    http_rule, tcp_only = model.policies[0].rules
    assert tcp_rule(http_rule, Action.ALLOW) is None and tcp_rule(http_rule, Action.AUDIT) is None
    assert tcp_rule(tcp_only, Action.ALLOW) == tcp_only
    denied = tcp_rule(http_rule, Action.DENY)
    assert denied is not None
    assert [s.ip_blocks for s in denied.sources] == [("10.0.0.0/8",)]
    assert [s.request_principals for s in denied.sources] == [()]
    assert [(o.methods, o.ports) for o in denied.operations] == [((), (80,))]
    assert [c.key for c in denied.conditions] == ["source.ip"]
