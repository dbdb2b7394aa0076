"""RequestAuthentication (security.istio.io): which JWTs a workload accepts (Envoy jwt_authn).

Mirrors istio/api `security/v1/request_authentication.proto`: `selector` and `jwtRules[]` with `issuer`,
`audiences`, `jwks` (inline JWKS) or `jwksUri` (fetched by Envoy through a `jwks|<host>|<port>` cluster the
control plane generates, translate/jwks.py) with its fetch `timeout`, `fromHeaders` (`name`, `prefix`),
`fromParams`, `forwardOriginalToken` and `outputPayloadToHeader`. Istio's semantics: a request with a token
that fails verification is rejected (401); a request without one passes — an AuthorizationPolicy with
`requestPrincipals` is what requires a token. Scopes as AuthorizationPolicy (model/authz.py).

Not supported yet, each a precise diagnostic rather than ignored: `outputClaimToHeaders`, `targetRef`.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field

from controlplane.api.common import parse_duration_ms
from controlplane.api.meta import IstioModel, PolicyObject, Problem
from controlplane.api.peerauthentication import SecurityApiVersion, WorkloadSelector


class JwtHeader(IstioModel):
    name: str = Field(min_length=1)
    prefix: str = ""


class ClaimToHeader(IstioModel):
    header: str
    claim: str


class JwtRule(IstioModel):
    issuer: str = Field(min_length=1)
    audiences: list[str] = Field(default_factory=list)
    jwks_uri: str | None = None
    jwks: str | None = None
    from_headers: list[JwtHeader] = Field(default_factory=list)
    from_params: list[str] = Field(default_factory=list)
    forward_original_token: bool = False
    output_payload_to_header: str = ""
    output_claim_to_headers: list[ClaimToHeader] = Field(default_factory=list)
    timeout: str | None = None


class RequestAuthenticationSpec(IstioModel):
    selector: WorkloadSelector | None = None
    jwt_rules: list[JwtRule] = Field(default_factory=list)


class RequestAuthentication(PolicyObject):
    KIND: ClassVar[str] = "RequestAuthentication"

    api_version: SecurityApiVersion  # type: ignore[assignment]
    kind: Literal["RequestAuthentication"]
    spec: RequestAuthenticationSpec = RequestAuthenticationSpec()

    def check(self) -> Iterator[Problem]:
        issuers: set[str] = set()
        for index, rule in enumerate(self.spec.jwt_rules):
            path: tuple[str | int, ...] = ("spec", "jwtRules", index)
            if rule.issuer in issuers:
                yield Problem((*path, "issuer"), f"duplicate issuer {rule.issuer!r} (Istio rejects it)")
            issuers.add(rule.issuer)
            if rule.jwks is not None:
                # Istio: inline keys win over jwksUri when both are given.
                message = jwks_problem(rule.jwks)
                if message:
                    yield Problem((*path, "jwks"), message)
            elif rule.jwks_uri is not None:
                try:
                    parse_jwks_uri(rule.jwks_uri)
                except ValueError as exc:
                    yield Problem((*path, "jwksUri"), str(exc))
            else:
                yield Problem((*path, "jwks"), "OpenID discovery of the issuer's keys is not supported: "
                                               "give jwks (inline JWKS) or jwksUri")
            if rule.output_claim_to_headers:
                yield Problem((*path, "outputClaimToHeaders"), "unsupported field outputClaimToHeaders")
            if rule.timeout is not None:
                try:
                    if parse_duration_ms(rule.timeout) <= 0:
                        raise ValueError(f"timeout {rule.timeout!r} must be positive")
                except ValueError as exc:
                    yield Problem((*path, "timeout"), str(exc))


@dataclass(frozen=True)
class JwksUri:
    """A parsed `jwksUri`: where Envoy fetches the keys (translate/jwks.py)."""

    uri: str
    host: str
    port: int
    tls: bool

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def parse_jwks_uri(text: str) -> JwksUri:
    """`https://host[:port]/path` → JwksUri; ValueError saying what is wrong (http/https only, a host)."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"jwksUri {text!r} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"jwksUri {text!r} must be an http:// or https:// URL")
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"jwksUri {text!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"jwksUri {text!r} must not carry credentials")
    if port == 0:
        raise ValueError(f"jwksUri {text!r} has port 0")
    tls = parts.scheme == "https"
    return JwksUri(text, host, port if port is not None else (443 if tls else 80), tls)


def jwks_problem(text: str) -> str:
    """Why an inline JWKS is not usable ("" when it is): JSON with a non-empty `keys` list of objects
    that each have a `kty`."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        return f"jwks does not parse as JSON: {exc}"
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list) or not keys:
        return "jwks must be a JSON object with a non-empty `keys` list"
    for i, key in enumerate(keys):
        if not isinstance(key, dict) or not isinstance(key.get("kty"), str):
            return f"jwks keys[{i}] is not a JSON Web Key (no `kty`)"
    return ""
