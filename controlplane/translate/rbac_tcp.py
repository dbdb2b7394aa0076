"""AuthorizationPolicy on TCP: Envoy's network RBAC filter (envoy.filters.network.rbac) on gateway TCP chains.

A gateway server that is not HTTP (TCP, TLS passthrough) forwards bytes with tcp_proxy, where the HTTP RBAC
filters of translate/rbac.py never run: without these filters a DENY policy selecting the gateway would
not stop anything there. Istio's TCP semantics (security/authorization-tcp, "known limitations"): a rule's
HTTP-only fields (`requestPrincipals`, `hosts`, `methods`, `paths`, `request.headers[...]`,
`request.auth.*`) cannot be evaluated on a connection, so an ALLOW (or AUDIT) rule using one matches
nothing, and a DENY rule using one is evaluated without those fields — broader, never more permissive.
A denied connection is closed by Envoy before the first byte is forwarded.

Sidecars' inbound listeners are HTTP only (translate/inbound.py), so nothing there needs this.
"""

from __future__ import annotations

from dataclasses import replace

from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2

from controlplane.model.authz import Action, Authz, AuthzPolicy, AuthzRule, ConditionMatch, OperationMatch
from controlplane.translate.protos import pack
from controlplane.translate.rbac import ALLOW_STAT_PREFIX, AUDIT_STAT_PREFIX, DENY_STAT_PREFIX, rbac_rules

NETWORK_RBAC = "envoy.filters.network.rbac"
_HTTP_KEYS = ("request.headers[", "request.auth.")


def tcp_filters(authz: Authz | None, stat_prefix: str) -> list[listener_components_pb2.Filter]:
    """Network RBAC filters for one TCP chain (AUDIT, DENY, ALLOW, as on HTTP), to go before tcp_proxy.
    Stats: `<stat_prefix>.rbac.{deny_,allow_}{allowed,denied}`, `...istio_audit_shadow_{allowed,denied}`."""
    if authz is None:
        return []
    filters = []
    audit = _tcp_policies(authz.of(Action.AUDIT), Action.AUDIT)
    if audit:
        filters.append(network_rbac_pb2.RBAC(
            stat_prefix=f"{stat_prefix}.", shadow_rules=rbac_rules(audit, deny=True),
            shadow_rules_stat_prefix=AUDIT_STAT_PREFIX))
    deny = _tcp_policies(authz.of(Action.DENY), Action.DENY)
    if deny:
        filters.append(network_rbac_pb2.RBAC(
            stat_prefix=f"{stat_prefix}.{DENY_STAT_PREFIX}", rules=rbac_rules(deny, deny=True)))
    allow = authz.of(Action.ALLOW)
    if allow:
        # as on HTTP: ALLOW policies whose rules all match nothing here still deny everything else
        filters.append(network_rbac_pb2.RBAC(
            stat_prefix=f"{stat_prefix}.{ALLOW_STAT_PREFIX}",
            rules=rbac_rules(_tcp_policies(allow, Action.ALLOW), deny=False)))
    return [listener_components_pb2.Filter(name=NETWORK_RBAC, typed_config=pack(f)) for f in filters]


def _tcp_policies(policies: tuple[AuthzPolicy, ...], action: Action) -> tuple[AuthzPolicy, ...]:
    out = []
    for policy in policies:
        rules = tuple(r for r in (tcp_rule(rule, action) for rule in policy.rules) if r is not None)
        out.append(replace(policy, rules=rules))
    return tuple(out)


def _http_condition(condition: ConditionMatch) -> bool:
    return condition.key.startswith(_HTTP_KEYS)


def _http_operation(op: OperationMatch) -> bool:
    return bool(op.hosts or op.not_hosts or op.methods or op.not_methods or op.paths or op.not_paths)


def tcp_rule(rule: AuthzRule, action: Action) -> AuthzRule | None:
    """The rule as a connection can evaluate it (module docstring); None: it matches no connection."""
    http_only = (any(s.request_principals or s.not_request_principals for s in rule.sources)
                 or any(_http_operation(op) for op in rule.operations)
                 or any(_http_condition(c) for c in rule.conditions))
    if not http_only:
        return rule
    if action is not Action.DENY:
        return None
    sources = tuple(replace(s, request_principals=(), not_request_principals=()) for s in rule.sources)
    operations = tuple(OperationMatch(ports=op.ports, not_ports=op.not_ports) for op in rule.operations)
    return replace(rule, sources=sources, operations=operations,
                   conditions=tuple(c for c in rule.conditions if not _http_condition(c)))
