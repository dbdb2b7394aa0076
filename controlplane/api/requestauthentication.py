"""RequestAuthentication (security.istio.io): which JWTs a workload accepts (Envoy jwt_authn).

Mirrors istio/api `security/v1/request_authentication.proto`: `selector` and `jwtRules[]` with `issuer`,
`audiences`, `jwks` (inline JWKS), `fromHeaders` (`name`, `prefix`), `fromParams`, `forwardOriginalToken`
and `outputPayloadToHeader`. Istio's semantics: a request with a token that fails verification is
rejected (401); a request without one passes — an AuthorizationPolicy with `requestPrincipals` is what
requires a token. Scopes as AuthorizationPolicy (build/authz.py).

Not supported yet, each a precise diagnostic rather than ignored: `jwksUri` (Envoy would fetch it through a
cluster the control plane generates), `outputClaimToHeaders`, `timeout`, `targetRef`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import Field

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
            if rule.jwks_uri is not None:
                yield Problem((*path, "jwksUri"), "unsupported field jwksUri: give the keys inline with "
                              "`jwks` (fetching a JWKS is not implemented yet)")
            elif rule.jwks is None:
                yield Problem((*path, "jwks"), "jwks is required (inline JWKS; jwksUri is not supported yet)")
            else:
                message = jwks_problem(rule.jwks)
                if message:
                    yield Problem((*path, "jwks"), message)
            if rule.output_claim_to_headers:
                yield Problem((*path, "outputClaimToHeaders"), "unsupported field outputClaimToHeaders")
            if rule.timeout is not None:
                yield Problem((*path, "timeout"), "unsupported field timeout (only used with jwksUri)")


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
