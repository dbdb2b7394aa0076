"""AuthorizationPolicy → Envoy RBAC HTTP filters (envoy.filters.http.rbac), as Istio generates them.

Filters in Istio's order (pilot/pkg/security/authz/builder): jwt_authn (translate/jwt.py), AUDIT (shadow
rules: counted in the `istio_audit_` shadow stats, never enforced), DENY, then ALLOW. No ALLOW policy: the
ALLOW filter does nothing; ALLOW policies: its policies are their rules (none matching, or only
allow-nothing policies → denied). Envoy answers a denied request with 403 `RBAC: access denied`.

Sidecars carry the rules per virtual host of the inbound route tables (`rbac_per_route`) behind filters
that are always there (`inbound_filters`): a policy change is then a route update, in effect for open
connections at once. Gateways carry them in the filters (`authz_filters`).

Each rule becomes one Envoy policy `ns[<ns>]-policy[<name>]-rule[<i>]`: permissions = any of its `to`
operations AND its request-side `when` conditions; principals = any of its `from` sources AND its
peer-side `when` conditions. Peer identity (principals, namespaces, source.principal/namespace) is the
URI SAN of the client certificate: `cluster.local/ns/x/sa/y` → `spiffe://cluster.local/ns/x/sa/y`,
`*` alone = any authenticated peer, `x*`/`*x` prefix/suffix; a namespace `ns` → `.*/ns/ns/.*`. Envoy's
`authenticated` matcher only matches a connection with a verified TLS peer certificate, so on the
plaintext chain of a PERMISSIVE port an identity rule never matches (kumahq/kuma#8152) — and no header
(x-forwarded-client-cert) can stand in for it; tests/e2e/test_authz.py proves both with real traffic.

Request principals (RequestAuthentication) are the verified JWT's `iss/sub`, read from the metadata the
jwt_authn filter writes (translate/jwt.py, `payload_in_metadata: payload`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2

from controlplane.model.authz import (
    Action,
    Authz,
    AuthzPolicy,
    AuthzRule,
    ConditionMatch,
    OperationMatch,
    SourceMatch,
)
from controlplane.translate.jwt import JWT_FILTER, jwt_filter
from controlplane.translate.protos import pack

RBAC_FILTER = "envoy.filters.http.rbac"
SPIFFE = "spiffe://"
# keys of `when` that match the peer (principals side) rather than the request (permissions side)
PEER_KEYS = ("source.ip", "remote.ip", "source.namespace", "source.principal", "request.auth.")


# One filter per action, named so that per-route configs can address them.
RBAC_AUDIT = "envoy.filters.http.rbac.audit"
RBAC_DENY = "envoy.filters.http.rbac.deny"
RBAC_ALLOW = "envoy.filters.http.rbac.allow"
AUDIT_STAT_PREFIX, DENY_STAT_PREFIX, ALLOW_STAT_PREFIX = "istio_audit_", "deny_", "allow_"


def inbound_filters(authz: Authz | None) -> list[hcm.HttpFilter]:
    """The sidecar inbound side: jwt_authn (when a RequestAuthentication applies), then the three RBAC
    filters, always present and empty (no-op). Their rules come per virtual host (`rbac_per_route`), so
    that adding, changing or removing a policy is a route update, which applies at once to connections
    already open — a listener update would leave them on the old filter chain until drained (minutes)."""
    filters = []
    authn = jwt_filter(authz.jwt) if authz is not None else None
    if authn is not None:
        filters.append(authn)
    # Envoy names the stats after the filter's own config, not the per-route one (a real Envoy 1.40
    # counted `rbac.shadow_denied`, unprefixed, with the prefixes only per route): the prefixes go here.
    prefixes = {RBAC_AUDIT: rbac_filter_pb2.RBAC(shadow_rules_stat_prefix=AUDIT_STAT_PREFIX),
                RBAC_DENY: rbac_filter_pb2.RBAC(rules_stat_prefix=DENY_STAT_PREFIX),
                RBAC_ALLOW: rbac_filter_pb2.RBAC(rules_stat_prefix=ALLOW_STAT_PREFIX)}
    for name in (RBAC_AUDIT, RBAC_DENY, RBAC_ALLOW):
        filters.append(hcm.HttpFilter(name=name, typed_config=pack(prefixes[name])))
    return filters


def rbac_per_route(authz: Authz | None) -> dict[str, rbac_filter_pb2.RBACPerRoute]:
    """Per-virtual-host configs for the filters of `inbound_filters` (absent: the empty no-op config)."""
    return {name: rbac_filter_pb2.RBACPerRoute(rbac=config) for name, config in _configs(authz)}


def authz_filters(authz: Authz | None) -> list[hcm.HttpFilter]:
    """Gateways: jwt_authn and RBAC filters with their rules in the filter (none without policies)."""
    if authz is None:
        return []
    filters = []
    authn = jwt_filter(authz.jwt)
    if authn is not None:
        filters.append(authn)
    filters += [hcm.HttpFilter(name=name, typed_config=pack(config)) for name, config in _configs(authz)]
    return filters


def _configs(authz: Authz | None) -> list[tuple[str, rbac_filter_pb2.RBAC]]:
    if authz is None:
        return []
    configs = []
    audit = authz.of(Action.AUDIT)
    if audit:
        configs.append((RBAC_AUDIT, rbac_filter_pb2.RBAC(
            shadow_rules=_rbac(audit, rbac_pb2.RBAC.DENY), shadow_rules_stat_prefix=AUDIT_STAT_PREFIX,
            track_per_rule_stats=True)))
    deny = authz.of(Action.DENY)
    if deny:
        configs.append((RBAC_DENY, rbac_filter_pb2.RBAC(
            rules=_rbac(deny, rbac_pb2.RBAC.DENY), rules_stat_prefix=DENY_STAT_PREFIX,
            track_per_rule_stats=True)))
    allow = authz.of(Action.ALLOW)
    if allow:
        # ALLOW policies but none with a rule (allow-nothing): an ALLOW filter without policies denies all
        configs.append((RBAC_ALLOW, rbac_filter_pb2.RBAC(
            rules=_rbac(allow, rbac_pb2.RBAC.ALLOW), rules_stat_prefix=ALLOW_STAT_PREFIX,
            track_per_rule_stats=True)))
    return configs


def rule_name(policy: AuthzPolicy, rule: AuthzRule) -> str:
    return f"{policy.name}-rule[{rule.index}]"


def rbac_rules(policies: tuple[AuthzPolicy, ...], *, deny: bool) -> rbac_pb2.RBAC:
    """The Envoy RBAC rules of these policies (translate/rbac_tcp.py shares them)."""
    return _rbac(policies, rbac_pb2.RBAC.DENY if deny else rbac_pb2.RBAC.ALLOW)


def _rbac(policies: tuple[AuthzPolicy, ...], action: rbac_pb2.RBAC.Action.ValueType) -> rbac_pb2.RBAC:
    rbac = rbac_pb2.RBAC(action=action)
    for policy in policies:
        for rule in policy.rules:
            rbac.policies[rule_name(policy, rule)].CopyFrom(_policy(rule))
    return rbac


def _policy(rule: AuthzRule) -> rbac_pb2.Policy:
    permissions: list[rbac_pb2.Permission] = []
    principals: list[rbac_pb2.Principal] = []
    if rule.operations:
        permissions.append(_or_perm([_operation(op) for op in rule.operations]))
    if rule.sources:
        principals.append(_or_id([_source(src) for src in rule.sources]))
    for condition in rule.conditions:
        if condition.key.startswith(PEER_KEYS):
            principals.append(_peer_condition(condition))
        else:
            permissions.append(_request_condition(condition))
    return rbac_pb2.Policy(permissions=[_and_perm(permissions)], principals=[_and_id(principals)])


# --- combinators (Envoy's And/Or need at least one element; one element needs no wrapper) ---

def _and_perm(items: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    if not items:
        return rbac_pb2.Permission(any=True)
    if len(items) == 1:
        return items[0]
    return rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=items))


def _or_perm(items: list[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    if len(items) == 1:
        return items[0]
    return rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=items))


def _and_id(items: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    if not items:
        return rbac_pb2.Principal(any=True)
    if len(items) == 1:
        return items[0]
    return rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=items))


def _or_id(items: list[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    if len(items) == 1:
        return items[0]
    return rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=items))


def _field_perm(values: tuple[Any, ...], negated: tuple[Any, ...],
                make: Callable[[Any], rbac_pb2.Permission]) -> list[rbac_pb2.Permission]:
    out = []
    if values:
        out.append(_or_perm([make(v) for v in values]))
    if negated:
        out.append(rbac_pb2.Permission(not_rule=_or_perm([make(v) for v in negated])))
    return out


def _field_id(values: tuple[Any, ...], negated: tuple[Any, ...],
              make: Callable[[Any], rbac_pb2.Principal]) -> list[rbac_pb2.Principal]:
    out = []
    if values:
        out.append(_or_id([make(v) for v in values]))
    if negated:
        out.append(rbac_pb2.Principal(not_id=_or_id([make(v) for v in negated])))
    return out


# --- string matching with Istio's wildcards ---

def wildcard_matcher(value: str, *, prefix: str = "", ignore_case: bool = False) -> string_pb2.StringMatcher:
    """`*` → present (non-empty), `x*` → prefix, `*x` → suffix, else exact; `prefix` is prepended to
    what the user wrote (the `spiffe://` of a principal)."""
    if value == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=re.escape(prefix) + ".+"))
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=prefix + value[:-1], ignore_case=ignore_case)
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:], ignore_case=ignore_case)
    return string_pb2.StringMatcher(exact=prefix + value, ignore_case=ignore_case)


def path_regex(value: str) -> str:
    """A path template (`/v1/{*}/items/{**}`) as a regular expression over the path without query."""
    parts = []
    for segment in value.split("/"):
        if segment == "{*}":
            parts.append("[^/]+")
        elif segment == "{**}":
            parts.append(".+")
        else:
            parts.append(re.escape(segment))
    return "/".join(parts)


def _path(value: str) -> rbac_pb2.Permission:
    if "{*" in value:
        matcher = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=path_regex(value)))
    else:
        matcher = wildcard_matcher(value)
    return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=matcher))


def _header_perm(name: str, value: str, *, ignore_case: bool = False) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(header=rc.HeaderMatcher(
        name=name, string_match=wildcard_matcher(value, ignore_case=ignore_case)))


def _operation(op: OperationMatch) -> rbac_pb2.Permission:
    rules: list[rbac_pb2.Permission] = []
    rules += _field_perm(op.hosts, op.not_hosts, lambda v: _header_perm(":authority", v, ignore_case=True))
    rules += _field_perm(op.ports, op.not_ports, lambda v: rbac_pb2.Permission(destination_port=v))
    rules += _field_perm(op.methods, op.not_methods, lambda v: _header_perm(":method", v))
    rules += _field_perm(op.paths, op.not_paths, _path)
    return _and_perm(rules)


# --- peers ---

def principal_id(value: str) -> rbac_pb2.Principal:
    matcher = wildcard_matcher(value, prefix=SPIFFE)
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=matcher))


def namespace_regex(value: str) -> str:
    if value == "*":
        return r".*/ns/[^/]+/.*"
    if value.endswith("*"):
        return rf".*/ns/{re.escape(value[:-1])}[^/]*/.*"
    if value.startswith("*"):
        return rf".*/ns/[^/]*{re.escape(value[1:])}/.*"
    return rf".*/ns/{re.escape(value)}/.*"


def namespace_id(value: str) -> rbac_pb2.Principal:
    matcher = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=namespace_regex(value)))
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=matcher))


def _cidr(value: str) -> address_pb2.CidrRange:
    network = ipaddress.ip_network(value.strip(), strict=False)
    cidr = address_pb2.CidrRange(address_prefix=str(network.network_address))
    cidr.prefix_len.value = network.prefixlen
    return cidr


def split_request_principal(value: str) -> tuple[str, str]:
    """`iss/sub` → (iss, sub); the issuer may itself contain '/', the subject rarely does."""
    if value == "*":
        return "*", "*"
    issuer, _, subject = value.rpartition("/")
    return (issuer or "*"), (subject or "*")


def _claim(path: tuple[str, ...], value: str) -> rbac_pb2.Principal:
    """The verified JWT's claim at `path` matches `value` (a string claim, or a list containing it)."""
    string = wildcard_matcher(value)
    one = value_pb2.ValueMatcher(string_match=string)
    either = value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=[
        one, value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=one))]))
    matcher = metadata_pb2.MetadataMatcher(
        filter=JWT_FILTER, path=[metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in ("payload", *path)],
        value=either)
    return rbac_pb2.Principal(metadata=matcher)


def request_principal_id(value: str) -> rbac_pb2.Principal:
    issuer, subject = split_request_principal(value)
    return _and_id([_claim(("iss",), issuer), _claim(("sub",), subject)])


def _source(src: SourceMatch) -> rbac_pb2.Principal:
    ids: list[rbac_pb2.Principal] = []
    ids += _field_id(src.principals, src.not_principals, principal_id)
    ids += _field_id(src.request_principals, src.not_request_principals, request_principal_id)
    ids += _field_id(src.namespaces, src.not_namespaces, namespace_id)
    ids += _field_id(src.ip_blocks, src.not_ip_blocks,
                     lambda v: rbac_pb2.Principal(direct_remote_ip=_cidr(v)))
    ids += _field_id(src.remote_ip_blocks, src.not_remote_ip_blocks,
                     lambda v: rbac_pb2.Principal(remote_ip=_cidr(v)))
    return _and_id(ids)


def _peer_condition(condition: ConditionMatch) -> rbac_pb2.Principal:
    key = condition.key
    make: Callable[[str], rbac_pb2.Principal]
    if key == "source.ip":
        make = lambda v: rbac_pb2.Principal(direct_remote_ip=_cidr(v))  # noqa: E731
    elif key == "remote.ip":
        make = lambda v: rbac_pb2.Principal(remote_ip=_cidr(v))  # noqa: E731
    elif key == "source.namespace":
        make = namespace_id
    elif key == "source.principal":
        make = principal_id
    elif key == "request.auth.principal":
        make = request_principal_id
    elif key == "request.auth.audiences":
        make = lambda v: _claim(("aud",), v)  # noqa: E731
    elif key == "request.auth.presenter":
        make = lambda v: _claim(("azp",), v)  # noqa: E731
    else:  # request.auth.claims[a] or request.auth.claims[a][b] (nested claims)
        names = tuple(part.rstrip("]") for part in key.removeprefix("request.auth.claims[").split("["))
        make = lambda v: _claim(names, v)  # noqa: E731
    return _and_id(_field_id(condition.values, condition.not_values, make))


def _request_condition(condition: ConditionMatch) -> rbac_pb2.Permission:
    key = condition.key
    make: Callable[[str], rbac_pb2.Permission]
    if key == "destination.port":
        make = lambda v: rbac_pb2.Permission(destination_port=int(v))  # noqa: E731
    elif key == "connection.sni":
        make = lambda v: rbac_pb2.Permission(requested_server_name=wildcard_matcher(v))  # noqa: E731
    else:  # request.headers[name]
        header = key.removeprefix("request.headers[").removesuffix("]")
        make = lambda v: _header_perm(header, v)  # noqa: E731
    return _and_perm(_field_perm(condition.values, condition.not_values, make))
