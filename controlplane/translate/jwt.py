"""RequestAuthentication → Envoy's jwt_authn HTTP filter, placed before the RBAC filters.

One provider per `jwtRules` entry: inline JWKS (`local_jwks`), or a `jwksUri` that Envoy fetches
(`remote_jwks`) through the cluster translate/jwks.py generates, cached for JWKS_CACHE_SECONDS and fetched
when the listener starts (so the first request does not wait for it).

The requirement is Istio's: any provider, or no token at all (`requires_any: [providers..., allow_missing]`)
— a token that no provider verifies is rejected with 401, a request without a token passes, and an
AuthorizationPolicy with `requestPrincipals` is what turns "no token" into 403. The verified payload goes to
dynamic metadata (`envoy.filters.http.jwt_authn` → `payload`), where the RBAC rules of translate/rbac.py
read `iss`, `sub`, `aud` and other claims.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import empty_pb2

from controlplane.model.authz import JwtProvider
from controlplane.translate.jwks import jwks_cluster_name
from controlplane.translate.protos import duration_ms, pack

JWT_FILTER = "envoy.filters.http.jwt_authn"
PAYLOAD_KEY = "payload"
# How long Envoy keeps fetched keys (Istio's default JWKS refresh interval is 20 minutes).
JWKS_CACHE_SECONDS = 20 * 60


def jwt_filter(providers: tuple[JwtProvider, ...]) -> hcm.HttpFilter | None:
    if not providers:
        return None
    config = jwt.JwtAuthentication()
    for provider in providers:
        config.providers[provider.name].CopyFrom(_provider(provider))
    requirement = jwt.JwtRequirement(requires_any=jwt.JwtRequirementOrList(requirements=[
        *(jwt.JwtRequirement(provider_name=p.name) for p in providers),
        jwt.JwtRequirement(allow_missing=empty_pb2.Empty()),
    ]))
    config.rules.append(jwt.RequirementRule(match=rc.RouteMatch(prefix="/"), requires=requirement))
    return hcm.HttpFilter(name=JWT_FILTER, typed_config=pack(config))


def _provider(provider: JwtProvider) -> jwt.JwtProvider:
    out = jwt.JwtProvider(issuer=provider.issuer, audiences=list(provider.audiences),
                          forward=provider.forward, payload_in_metadata=PAYLOAD_KEY,
                          from_params=list(provider.from_params))
    if provider.remote is not None:
        remote = out.remote_jwks
        remote.http_uri.uri = provider.remote.uri
        remote.http_uri.cluster = jwks_cluster_name(provider.remote)
        remote.http_uri.timeout.CopyFrom(duration_ms(provider.fetch_timeout_ms))
        remote.cache_duration.seconds = JWKS_CACHE_SECONDS
        remote.async_fetch.fast_listener = False
    else:
        out.local_jwks.inline_string = provider.jwks
    for name, prefix in provider.from_headers:
        out.from_headers.append(jwt.JwtHeader(name=name, value_prefix=prefix))
    if provider.payload_header:
        out.forward_payload_header = provider.payload_header
    return out
