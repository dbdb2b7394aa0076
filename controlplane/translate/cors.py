"""CORS: VirtualService `corsPolicy` → per-route `typed_per_filter_config["envoy.filters.http.cors"]`.

The CORS filter is in every sidecar HCM chain (after fault, before router, Istio's order); without a
per-route policy it does nothing. Lists are comma-joined and `maxAge` is written in seconds, as Envoy's
CorsPolicy expects strings for them.
"""

from __future__ import annotations

from envoy.extensions.filters.http.cors.v3 import cors_pb2

from controlplane.model.routemodel import Cors
from controlplane.translate.route_match import string_matcher


def cors_policy(cors: Cors) -> cors_pb2.CorsPolicy:
    out = cors_pb2.CorsPolicy(
        allow_origin_string_match=[string_matcher(origin) for origin in cors.allow_origins],
        allow_methods=",".join(cors.allow_methods),
        allow_headers=",".join(cors.allow_headers),
        expose_headers=",".join(cors.expose_headers),
    )
    if cors.max_age_s is not None:
        out.max_age = str(cors.max_age_s)
    if cors.allow_credentials is not None:
        out.allow_credentials.value = cors.allow_credentials
    return out
