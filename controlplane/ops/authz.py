"""Dry-run authorization: would a proxy allow a request, and which policy and rule (file:line) decided?

A pure evaluator over the build model (model/authz.py), written from Istio's semantics rather than from the
Envoy configuration we generate, so that a test asking both it and a real Envoy checks the translation:
DENY policies first (any matching rule denies), then ALLOW policies (when there is one, a request must
match one of their rules), AUDIT only noted. Identity (`principals`, `namespaces`, `source.principal`,
`source.namespace`) comes from the peer's SPIFFE ID and exists only over mTLS; a plaintext request has none,
so it never matches a principal rule (and always matches a `notPrincipals`, as in Envoy).

Used by `controlplane authz NODE ...` (cli.py) and `/debug/authz` (ops/admin.py).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from controlplane.model.authz import (
    Action,
    Authz,
    AuthzPolicy,
    AuthzRule,
    ConditionMatch,
    OperationMatch,
    SourceMatch,
)
from controlplane.translate.rbac import namespace_regex, path_regex, split_request_principal

SPIFFE = "spiffe://"


@dataclass(frozen=True)
class Request:
    """What the evaluator knows about a request. `peer` is the caller's SPIFFE ID (None: plaintext)."""

    method: str = "GET"
    path: str = "/"
    host: str = ""
    port: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    peer: str | None = None
    source_ip: str = "127.0.0.1"
    sni: str = ""
    # the verified JWT's claims (RequestAuthentication); None: no token
    claims: dict[str, Any] | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    policy: AuthzPolicy | None = None
    rule: AuthzRule | None = None
    audited: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        if self.policy is None:
            return ""
        ref = self.policy.ref
        line = self.rule.line if self.rule is not None and self.rule.line else ref.line
        return f"{ref.file}:{line}" if ref.file else ""

    def as_dict(self) -> dict[str, Any]:
        policy = self.policy
        return {
            "decision": "ALLOW" if self.allowed else "DENY",
            "reason": self.reason,
            "policy": f"{policy.ref.namespace}/{policy.ref.name}" if policy else None,
            "action": policy.action.value if policy else None,
            "rule": self.rule.index if self.rule is not None else None,
            "location": self.where or None,
            "audited": list(self.audited),
        }

    def describe(self) -> str:
        verdict = "ALLOW" if self.allowed else "DENY"
        text = f"{verdict}: {self.reason}"
        if self.where:
            text += f" ({self.where})"
        return text


def evaluate(authz: Authz | None, request: Request) -> Decision:
    if authz is None or not authz.policies:
        return Decision(True, "no AuthorizationPolicy applies")
    audited = tuple(f"{p.ref.namespace}/{p.ref.name} rule {r.index}"
                    for p in authz.of(Action.AUDIT) for r in p.rules if rule_matches(r, request))
    for policy in authz.of(Action.DENY):
        for rule in policy.rules:
            if rule_matches(rule, request):
                return Decision(False, f"DENY policy {policy.ref.namespace}/{policy.ref.name} rule "
                                f"{rule.index} matches{_stand_in(policy)}", policy, rule, audited)
    allow = authz.of(Action.ALLOW)
    if not allow:
        return Decision(True, "no DENY rule matches and no ALLOW policy applies", audited=audited)
    for policy in allow:
        for rule in policy.rules:
            if rule_matches(rule, request):
                return Decision(True, f"ALLOW policy {policy.ref.namespace}/{policy.ref.name} rule "
                                f"{rule.index} matches", policy, rule, audited)
    names = ", ".join(f"{p.ref.namespace}/{p.ref.name}{_stand_in(p)}" for p in allow)
    return Decision(False, f"no rule of the ALLOW policies ({names}) matches", audited=audited)


def _stand_in(policy: AuthzPolicy) -> str:
    if not policy.fail_closed:
        return ""
    return f" (the policy is invalid: enforced as {policy.fail_closed}, fail closed)"


def rule_matches(rule: AuthzRule, request: Request) -> bool:
    if rule.sources and not any(source_matches(s, request) for s in rule.sources):
        return False
    if rule.operations and not any(operation_matches(o, request) for o in rule.operations):
        return False
    return all(condition_matches(c, request) for c in rule.conditions)


def wildcard(pattern: str, value: str | None, *, prefix: str = "", ignore_case: bool = False) -> bool:
    if value is None:
        return False
    if ignore_case:
        pattern, value, prefix = pattern.lower(), value.lower(), prefix.lower()
    if pattern == "*":
        return value.startswith(prefix) and len(value) > len(prefix)
    if pattern.endswith("*"):
        return value.startswith(prefix + pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == prefix + pattern


def _field(values: tuple[Any, ...], negated: tuple[Any, ...], test: Any) -> bool:
    if values and not any(test(v) for v in values):
        return False
    return not (negated and any(test(v) for v in negated))


def _in_block(block: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(block.strip(), strict=False)
    except ValueError:
        return False


def _principal(pattern: str, request: Request) -> bool:
    return wildcard(pattern, request.peer, prefix=SPIFFE)


def _namespace(pattern: str, request: Request) -> bool:
    return request.peer is not None and re.fullmatch(namespace_regex(pattern), request.peer) is not None


def _claim(path: tuple[str, ...], pattern: str, request: Request) -> bool:
    value: Any = request.claims
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    if isinstance(value, list):
        return any(isinstance(v, str) and wildcard(pattern, v) for v in value)
    return isinstance(value, str) and wildcard(pattern, value)


def _request_principal(pattern: str, request: Request) -> bool:
    issuer, subject = split_request_principal(pattern)
    return _claim(("iss",), issuer, request) and _claim(("sub",), subject, request)


def source_matches(src: SourceMatch, request: Request) -> bool:
    # no X-Forwarded-For trust on the inbound side: the remote address is the peer's address
    return (
        _field(src.principals, src.not_principals, lambda v: _principal(v, request))
        and _field(src.request_principals, src.not_request_principals,
                   lambda v: _request_principal(v, request))
        and _field(src.namespaces, src.not_namespaces, lambda v: _namespace(v, request))
        and _field(src.ip_blocks, src.not_ip_blocks, lambda v: _in_block(v, request.source_ip))
        and _field(src.remote_ip_blocks, src.not_remote_ip_blocks, lambda v: _in_block(v, request.source_ip))
    )


def _path(pattern: str, request: Request) -> bool:
    path = request.path.partition("?")[0]
    if "{*" in pattern:
        return re.fullmatch(path_regex(pattern), path) is not None
    return wildcard(pattern, path)


def operation_matches(op: OperationMatch, request: Request) -> bool:
    return (
        _field(op.hosts, op.not_hosts, lambda v: wildcard(v, request.host, ignore_case=True))
        and _field(op.ports, op.not_ports, lambda v: v == request.port)
        and _field(op.methods, op.not_methods, lambda v: v == request.method)
        and _field(op.paths, op.not_paths, lambda v: _path(v, request))
    )


def condition_matches(condition: ConditionMatch, request: Request) -> bool:
    key = condition.key
    headers = {k.lower(): v for k, v in request.headers}
    test: Any
    if key in ("source.ip", "remote.ip"):
        test = lambda v: _in_block(v, request.source_ip)  # noqa: E731
    elif key == "source.namespace":
        test = lambda v: _namespace(v, request)  # noqa: E731
    elif key == "source.principal":
        test = lambda v: _principal(v, request)  # noqa: E731
    elif key == "destination.port":
        test = lambda v: int(v) == request.port  # noqa: E731
    elif key == "connection.sni":
        test = lambda v: wildcard(v, request.sni or None)  # noqa: E731
    elif key == "request.auth.principal":
        test = lambda v: _request_principal(v, request)  # noqa: E731
    elif key == "request.auth.audiences":
        test = lambda v: _claim(("aud",), v, request)  # noqa: E731
    elif key == "request.auth.presenter":
        test = lambda v: _claim(("azp",), v, request)  # noqa: E731
    elif key.startswith("request.auth.claims["):
        names = tuple(part.rstrip("]") for part in key.removeprefix("request.auth.claims[").split("["))
        test = lambda v: _claim(names, v, request)  # noqa: E731
    else:
        header = key.removeprefix("request.headers[").removesuffix("]").lower()
        test = lambda v: wildcard(v, headers.get(header))  # noqa: E731
    return _field(condition.values, condition.not_values, test)
