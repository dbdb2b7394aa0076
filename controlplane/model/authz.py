"""AuthorizationPolicy resolution: the policies one proxy enforces, as plain frozen values (no Envoy types).

Which policies apply (Istio's rules, security/v1/authorization_policy.proto): those without a selector in
the root namespace (mesh-wide) and in the workload's namespace, those with a selector matching the
workload's labels in its namespace, and those with a matching selector in the root namespace (they select
workloads of every namespace). All that apply are enforced together: any matching DENY denies; then, when
at least one ALLOW policy applies, a request must match one of their rules (none matching, or only
allow-nothing `spec: {}` policies: denied); AUDIT policies only record. Gateways get the policies that
select their labels in the same way.

translate/rbac.py turns `Authz` into Envoy RBAC filters; ops/authz.py evaluates it without traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from controlplane.api.authorizationpolicy import (
    FAIL_CLOSED_ANNOTATION,
    AuthorizationPolicy,
    Condition,
    Operation,
    Rule,
    Source,
    port_number,
)
from controlplane.api.common import labels_match, parse_duration_ms
from controlplane.api.meshconfig import DEFAULT_ROOT_NAMESPACE
from controlplane.api.policyset import PolicySet
from controlplane.api.requestauthentication import JwksUri, JwtRule, RequestAuthentication, parse_jwks_uri
from controlplane.model.refs import PolicyRef, policy_ref

_Scoped = TypeVar("_Scoped", AuthorizationPolicy, RequestAuthentication)


class Action(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"
    AUDIT = "AUDIT"


@dataclass(frozen=True)
class SourceMatch:
    """One `from[].source`: every non-empty field must match (values of one field: any)."""

    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()


@dataclass(frozen=True)
class OperationMatch:
    """One `to[].operation`: every non-empty field must match."""

    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    not_ports: tuple[int, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConditionMatch:
    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthzRule:
    """A rule matches when one of `sources` (any when empty), one of `operations` (any when empty) and
    every condition match."""

    index: int
    sources: tuple[SourceMatch, ...] = ()
    operations: tuple[OperationMatch, ...] = ()
    conditions: tuple[ConditionMatch, ...] = ()
    # where the rule is written (file:line), for "which rule decided"
    line: int = 0


@dataclass(frozen=True)
class AuthzPolicy:
    ref: PolicyRef
    action: Action
    rules: tuple[AuthzRule, ...]
    # non-empty: the fail-closed stand-in of an invalid policy, saying what it enforces (api `fail_closed`)
    fail_closed: str = ""

    @property
    def name(self) -> str:
        """Istio's RBAC policy name prefix: `ns[<ns>]-policy[<name>]`."""
        return f"ns[{self.ref.namespace}]-policy[{self.ref.name}]"


@dataclass(frozen=True)
class JwtProvider:
    """One `jwtRules` entry of a RequestAuthentication (translate/jwt.py)."""

    name: str
    issuer: str
    # the inline JWKS, or "" when the keys are fetched from `remote`
    jwks: str
    audiences: tuple[str, ...] = ()
    # (header name, value prefix); empty: Envoy's default (Authorization: Bearer)
    from_headers: tuple[tuple[str, str], ...] = ()
    from_params: tuple[str, ...] = ()
    forward: bool = False
    payload_header: str = ""
    # `jwksUri` (when no inline `jwks`): Envoy fetches the keys through a generated cluster
    remote: JwksUri | None = None
    fetch_timeout_ms: int = 5000


@dataclass(frozen=True)
class Authz:
    """The AuthorizationPolicies one proxy enforces, sorted by (namespace, name), and the JWT providers
    of the RequestAuthentications that apply to it."""

    policies: tuple[AuthzPolicy, ...] = ()
    jwt: tuple[JwtProvider, ...] = ()
    jwt_origins: tuple[PolicyRef, ...] = ()

    def of(self, action: Action) -> tuple[AuthzPolicy, ...]:
        return tuple(p for p in self.policies if p.action is action)

    @property
    def origins(self) -> tuple[PolicyRef, ...]:
        return (*(p.ref for p in self.policies), *self.jwt_origins)


def _root_namespace(policy: PolicySet) -> str:
    mesh = policy.mesh_config()
    return mesh.spec.root_namespace if mesh is not None else DEFAULT_ROOT_NAMESPACE


def applicable(
    policy: PolicySet, namespace: str, labels: dict[str, str], kind: type[_Scoped]
) -> list[_Scoped]:
    root = _root_namespace(policy)
    chosen = []
    for ap in policy.of_kind(kind):
        scope = ap.metadata.namespace
        if scope not in (namespace, root):
            continue
        selector = ap.spec.selector
        if selector is None or labels_match(selector.match_labels, labels):
            chosen.append(ap)
    return chosen


def build_authz(policy: PolicySet, namespace: str, labels: dict[str, str]) -> Authz | None:
    """The workload's (or gateway's) policies; None when none applies (no RBAC filter at all)."""
    chosen = [ap for ap in applicable(policy, namespace, labels, AuthorizationPolicy)
              if ap.spec.action != "CUSTOM"]
    authentications = sorted(applicable(policy, namespace, labels, RequestAuthentication),
                             key=lambda p: (p.metadata.namespace, p.metadata.name))
    if not chosen and not authentications:
        return None
    jwt = tuple(_provider(ra, index, rule) for ra in authentications
                for index, rule in enumerate(ra.spec.jwt_rules) if _usable(rule))
    policies = []
    for ap in sorted(chosen, key=lambda p: (p.metadata.namespace, p.metadata.name)):
        ref = policy_ref(policy, ap)
        source = policy.source(ap.key)
        rules = tuple(
            _rule(index, rule, source.line_of(("spec", "rules", index)) if source else 0)
            for index, rule in enumerate(ap.spec.rules)
        )
        policies.append(AuthzPolicy(ref, Action(ap.spec.action), rules,
                                    ap.metadata.annotations.get(FAIL_CLOSED_ANNOTATION, "")))
    return Authz(tuple(policies), jwt, tuple(policy_ref(policy, ra) for ra in authentications))


def _usable(rule: JwtRule) -> bool:
    """Has keys to verify with (an invalid jwksUri is a diagnostic and gives no provider)."""
    if rule.jwks is not None:
        return True
    try:
        return rule.jwks_uri is not None and bool(parse_jwks_uri(rule.jwks_uri))
    except ValueError:
        return False


def _provider(ra: RequestAuthentication, index: int, rule: JwtRule) -> JwtProvider:
    remote = parse_jwks_uri(rule.jwks_uri) if rule.jwks is None and rule.jwks_uri is not None else None
    return JwtProvider(
        name=f"{ra.metadata.namespace}/{ra.metadata.name}/{index}",
        issuer=rule.issuer,
        jwks=rule.jwks or "",
        audiences=tuple(rule.audiences),
        from_headers=tuple((h.name, h.prefix) for h in rule.from_headers),
        from_params=tuple(rule.from_params),
        forward=rule.forward_original_token,
        payload_header=rule.output_payload_to_header,
        remote=remote,
        fetch_timeout_ms=parse_duration_ms(rule.timeout) if rule.timeout else 5000,
    )


def _rule(index: int, rule: Rule, line: int) -> AuthzRule:
    return AuthzRule(
        index=index,
        sources=tuple(_source(f.source) for f in rule.from_),
        operations=tuple(_operation(t.operation) for t in rule.to),
        conditions=tuple(_condition(c) for c in rule.when),
        line=line,
    )


def _source(source: Source) -> SourceMatch:
    return SourceMatch(**{name: tuple(getattr(source, name)) for name in SourceMatch.__dataclass_fields__})


def _ports(values: list[str | int]) -> tuple[int, ...]:
    return tuple(p for p in (port_number(v) for v in values) if p is not None)


def _operation(operation: Operation) -> OperationMatch:
    return OperationMatch(
        hosts=tuple(operation.hosts),
        not_hosts=tuple(operation.not_hosts),
        ports=_ports(operation.ports),
        not_ports=_ports(operation.not_ports),
        methods=tuple(operation.methods),
        not_methods=tuple(operation.not_methods),
        paths=tuple(operation.paths),
        not_paths=tuple(operation.not_paths),
    )


def _condition(condition: Condition) -> ConditionMatch:
    return ConditionMatch(condition.key, tuple(condition.values), tuple(condition.not_values))
