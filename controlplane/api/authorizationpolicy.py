"""AuthorizationPolicy (security.istio.io): who may call a workload, with which requests (Envoy RBAC).

Mirrors istio/api `security/v1/authorization_policy.proto`: `selector`, `action` (ALLOW, DENY, AUDIT;
CUSTOM needs an ext_authz provider, which we do not have: a precise diagnostic), `rules[]` of `from[].source`,
`to[].operation` and `when[]`. Scopes as PeerAuthentication: no selector in the root namespace = mesh-wide,
no selector elsewhere = the namespace, a selector = the matching workloads (and gateways) of the namespace
(of every namespace, in the root namespace). Resolution: model/authz.py; Envoy filters: translate/rbac.py.

Validation follows Istio's (pkg/config/validation, security.go): `from`/`to` entries must not be empty,
ports are numbers, paths are exact, `prefix*`, `*suffix`, `*` or path templates whose `{*}`/`{**}` are whole
segments (`/a{*}b` is rejected) with `{**}` last, principals carry a trust domain (`cluster.local/ns/x/sa/y`,
not `spiffe://…` nor `ns/x/sa/y`), and `when` keys are the ones Istio knows (those we cannot translate yet
are a diagnostic naming the key, never ignored).
See https://istio.io/latest/docs/reference/config/security/authorization-policy/.

Fail closed (`fail_closed`): an AuthorizationPolicy that is invalid and never had a valid version is not
simply left out — that could turn its workloads allow-all. It is replaced by a stand-in for the scope its
metadata and selector name: an ALLOW policy allows nothing (as Istio skips every rule it cannot
translate), a DENY policy denies everything (`rules: [{}]`), a CUSTOM policy too (Istio denies all when
it cannot use the CUSTOM provider) and so does an unknown action (its intent is unknown); an AUDIT policy
enforces nothing, so it is left out. A selector that cannot be read widens the scope to the namespace
(the root namespace: the mesh). docs/authz.md, "Bad input: fail closed".
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field

from controlplane.api.meta import IstioModel, PolicyObject, Problem
from controlplane.api.peerauthentication import SecurityApiVersion, WorkloadSelector

ActionName = Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"]

# `when` keys we translate. `request.headers[...]` and `request.auth.claims[...]` take a name in brackets.
WHEN_KEYS = frozenset({
    "source.ip", "remote.ip", "source.namespace", "source.principal", "destination.port", "connection.sni",
    "request.auth.principal", "request.auth.audiences", "request.auth.presenter",
})
WHEN_PREFIXES = ("request.headers[", "request.auth.claims[")
# Keys Istio knows but we cannot translate (yet): named in the diagnostic as such.
WHEN_UNSUPPORTED = frozenset({"destination.ip", "experimental.envoy.filters.network.mysql_proxy"})

_TEMPLATE = re.compile(r"\{\*\*?\}")


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class Source(IstioModel):
    principals: list[str] = Field(default_factory=list)
    not_principals: list[str] = Field(default_factory=list)
    request_principals: list[str] = Field(default_factory=list)
    not_request_principals: list[str] = Field(default_factory=list)
    namespaces: list[str] = Field(default_factory=list)
    not_namespaces: list[str] = Field(default_factory=list)
    ip_blocks: list[str] = Field(default_factory=list)
    not_ip_blocks: list[str] = Field(default_factory=list)
    remote_ip_blocks: list[str] = Field(default_factory=list)
    not_remote_ip_blocks: list[str] = Field(default_factory=list)


class Operation(IstioModel):
    hosts: list[str] = Field(default_factory=list)
    not_hosts: list[str] = Field(default_factory=list)
    # Istio's proto has strings ("8080"); numbers are accepted too, as Kubernetes would coerce them.
    ports: list[str | int] = Field(default_factory=list)
    not_ports: list[str | int] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)
    not_methods: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    not_paths: list[str] = Field(default_factory=list)


class From(IstioModel):
    source: Source


class To(IstioModel):
    operation: Operation


class Condition(IstioModel):
    key: str
    values: list[str] = Field(default_factory=list)
    not_values: list[str] = Field(default_factory=list)


class Rule(IstioModel):
    from_: list[From] = Field(default_factory=list, alias="from")
    to: list[To] = Field(default_factory=list)
    when: list[Condition] = Field(default_factory=list)


class ExtensionProvider(IstioModel):
    name: str


class AuthorizationPolicySpec(IstioModel):
    selector: WorkloadSelector | None = None
    action: Annotated[ActionName, BeforeValidator(_upper)] = "ALLOW"
    rules: list[Rule] = Field(default_factory=list)
    provider: ExtensionProvider | None = None


class AuthorizationPolicy(PolicyObject):
    KIND: ClassVar[str] = "AuthorizationPolicy"

    api_version: SecurityApiVersion  # type: ignore[assignment]
    kind: Literal["AuthorizationPolicy"]
    spec: AuthorizationPolicySpec = AuthorizationPolicySpec()

    def check(self) -> Iterator[Problem]:
        spec = self.spec
        if spec.action == "CUSTOM":
            yield Problem(("spec", "action"), "unsupported value 'CUSTOM': the CUSTOM action (ext_authz) is "
                          "not supported: it needs an ext_authz extension provider (MeshConfig "
                          "extensionProviders), which this control plane does not have; enforced as deny-all "
                          "for the selected workloads (fail closed)")
        elif spec.provider is not None:
            yield Problem(("spec", "provider"), "provider is only allowed with action CUSTOM")
        for r, rule in enumerate(spec.rules):
            base: tuple[str | int, ...] = ("spec", "rules", r)
            for f, entry in enumerate(rule.from_):
                yield from _check_source(entry.source, (*base, "from", f, "source"))
            for t, target in enumerate(rule.to):
                yield from _check_operation(target.operation, (*base, "to", t, "operation"))
            for w, condition in enumerate(rule.when):
                yield from _check_condition(condition, (*base, "when", w))


# Marks a fail-closed stand-in (model/authz.py carries it to the dry run's answer); the value says why.
FAIL_CLOSED_ANNOTATION = "controlplane.fail-closed"


def fail_closed(data: object) -> AuthorizationPolicy | None:
    """The stand-in enforced for an invalid AuthorizationPolicy document that never had a valid version
    (module docstring), or None when it enforces nothing (AUDIT) or has no readable name."""
    if not isinstance(data, dict):
        return None
    metadata, spec = data.get("metadata"), data.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    action = spec.get("action", "ALLOW")
    action = action.upper() if isinstance(action, str) else action
    if action == "AUDIT":
        return None
    allow = action == "ALLOW"
    selector = spec.get("selector")
    labels = selector.get("matchLabels") if isinstance(selector, dict) else None
    usable = (isinstance(labels, dict) and bool(labels)
              and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()))
    what = "allow-nothing" if allow else "deny-all"
    if selector is not None and not usable:
        what += ", for the whole namespace (its selector cannot be read)"
    meta = dict(metadata) if isinstance(metadata, dict) else {}
    stand_in: dict[str, object] = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {key: meta[key] for key in ("name", "namespace") if key in meta}
        | {"annotations": {FAIL_CLOSED_ANNOTATION: what}},
        "spec": {"action": "ALLOW" if allow else "DENY", "rules": [] if allow else [{}]}
        | ({"selector": {"matchLabels": labels}} if usable else {}),
    }
    try:
        return AuthorizationPolicy.model_validate(stand_in)
    except ValueError:  # pydantic's ValidationError: the name or namespace itself is invalid
        return None


def _check_source(source: Source, path: tuple[str | int, ...]) -> Iterator[Problem]:
    if source == Source():
        yield Problem(path, "a source must set at least one field (Istio rejects an empty source)")
    for name in ("principals", "not_principals"):
        for i, value in enumerate(getattr(source, name)):
            message = principal_problem(value)
            if message:
                yield Problem((*path, _camel(name), i), message)
    for name in ("ip_blocks", "not_ip_blocks", "remote_ip_blocks", "not_remote_ip_blocks"):
        for i, value in enumerate(getattr(source, name)):
            if cidr(value) is None:
                yield Problem((*path, _camel(name), i), f"invalid IP address or CIDR block {value!r}")
    for name in ("namespaces", "not_namespaces", "request_principals", "not_request_principals"):
        for i, value in enumerate(getattr(source, name)):
            if _bad_wildcard(value):
                yield Problem((*path, _camel(name), i), f"invalid value {value!r}: '*' is only allowed "
                              "alone, as a prefix or as a suffix")


def _check_operation(operation: Operation, path: tuple[str | int, ...]) -> Iterator[Problem]:
    if operation == Operation():
        yield Problem(path, "an operation must set at least one field (Istio rejects an empty operation)")
    for name in ("ports", "not_ports"):
        for i, value in enumerate(getattr(operation, name)):
            if port_number(value) is None:
                yield Problem((*path, _camel(name), i), f"invalid port {value!r}: must be a number 1-65535")
    for name in ("paths", "not_paths"):
        for i, value in enumerate(getattr(operation, name)):
            message = path_problem(value)
            if message:
                yield Problem((*path, _camel(name), i), message)
    for name in ("hosts", "not_hosts", "methods", "not_methods"):
        for i, value in enumerate(getattr(operation, name)):
            if _bad_wildcard(value):
                yield Problem((*path, _camel(name), i), f"invalid value {value!r}: '*' is only allowed "
                              "alone, as a prefix or as a suffix")


def _check_condition(condition: Condition, path: tuple[str | int, ...]) -> Iterator[Problem]:
    key = condition.key
    if not condition.values and not condition.not_values:
        yield Problem(path, f"condition {key!r} needs values or notValues")
    if key in WHEN_UNSUPPORTED:
        yield Problem((*path, "key"), f"unsupported when key {key!r}: not translated by this control plane")
        return
    if not (key in WHEN_KEYS or (key.startswith(WHEN_PREFIXES) and key.endswith("]") and
                                 len(key) > len(key.partition("[")[0]) + 2)):
        known = ", ".join(sorted(WHEN_KEYS | {"request.headers[NAME]", "request.auth.claims[NAME]"}))
        yield Problem((*path, "key"), f"unknown when key {key!r}; known: {known}")
        return
    values = [*condition.values, *condition.not_values]
    if key in ("source.ip", "remote.ip"):
        for value in values:
            if cidr(value) is None:
                yield Problem((*path, "values"), f"invalid IP address or CIDR block {value!r}")
    elif key == "destination.port":
        for value in values:
            if port_number(value) is None:
                yield Problem((*path, "values"), f"invalid port {value!r}: must be a number 1-65535")
    elif key == "source.principal":
        for value in values:
            message = principal_problem(value)
            if message:
                yield Problem((*path, "values"), message)


def principal_problem(value: str) -> str:
    """Why a peer principal is not one Istio accepts ("" when it is fine)."""
    if value.startswith("spiffe://"):
        return (f"invalid principal {value!r}: write it without 'spiffe://' "
                f"(e.g. {value.removeprefix('spiffe://')!r})")
    if value.startswith("ns/") or value.startswith("/ns/"):
        return (f"invalid principal {value!r}: it needs a trust domain, e.g. "
                f"'cluster.local/{value.lstrip('/')}'")
    if _bad_wildcard(value):
        return f"invalid principal {value!r}: '*' is only allowed alone, as a prefix or as a suffix"
    return ""


def path_problem(value: str) -> str:
    """Why a path pattern is not one Istio accepts ("" when it is fine)."""
    if not value:
        return "empty path"
    if not _TEMPLATE.search(value):
        if _bad_wildcard(value):
            return f"invalid path {value!r}: '*' is only allowed alone, as a prefix or as a suffix"
        return ""
    if not value.startswith("/"):
        return f"invalid path template {value!r}: must start with '/'"
    segments = value.split("/")[1:]
    for index, segment in enumerate(segments):
        if _TEMPLATE.search(segment) and segment not in ("{*}", "{**}"):
            return f"invalid path template {value!r}: {{*}} and {{**}} must be a whole path segment"
        if "*" in segment and segment not in ("{*}", "{**}"):
            return f"invalid path template {value!r}: '*' cannot be combined with {{*}} or {{**}}"
        if segment == "{**}" and index != len(segments) - 1:
            return f"invalid path template {value!r}: {{**}} must be the last segment"
    return ""


def _bad_wildcard(value: str) -> bool:
    stars = value.count("*")
    if stars != 1 or value == "*":
        return stars > 1
    return not value.startswith("*") and not value.endswith("*")


def port_number(value: str | int) -> int | None:
    text = str(value).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        return None
    return int(text)


def cidr(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """An IP or CIDR block as Istio reads it: a bare address is a /32 (/128)."""
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        return None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
