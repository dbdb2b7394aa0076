"""jwksUri → the generated `jwks|<host>|<port>` clusters and jwt_authn's remote_jwks (translate/jwks.py)."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from controlplane.api.requestauthentication import parse_jwks_uri
from controlplane.model.authz import Authz, JwtProvider
from controlplane.translate.jwks import jwks_clusters
from controlplane.translate.jwt import jwt_filter
from controlplane.translate.mtls import SYSTEM_CA_BUNDLE


def _remote(name: str, uri: str) -> JwtProvider:
    return JwtProvider(name=name, issuer=name, jwks="", remote=parse_jwks_uri(uri), fetch_timeout_ms=2500)


def test_https_name_gets_strict_dns_with_tls_sni_san_and_system_cas() -> None:
    authz = Authz(jwt=(_remote("a", "https://idp.example.com/a.json"), _remote("b", "https://idp.example.com/b"),
                       JwtProvider(name="c", issuer="c", jwks='{"keys": [{"kty": "EC"}]}')))
    clusters = jwks_clusters(authz, 1000)
    assert [c.name for c in clusters] == ["jwks|idp.example.com|443"]  # shared by a and b; c is inline
    cluster = clusters[0]
    assert cluster.type == cluster_pb2.Cluster.STRICT_DNS
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("idp.example.com", 443)
    context = tls_pb2.UpstreamTlsContext()
    assert cluster.transport_socket.typed_config.Unpack(context)
    assert context.sni == "idp.example.com"
    validation = context.common_tls_context.validation_context
    assert validation.trusted_ca.filename == SYSTEM_CA_BUNDLE
    assert [m.matcher.exact for m in validation.match_typed_subject_alt_names] == ["idp.example.com"]


def test_http_ip_gets_static_plaintext_and_remote_jwks_points_at_it() -> None:
    provider = _remote("p", "http://127.0.0.1:8088/keys")
    (cluster,) = jwks_clusters(Authz(jwt=(provider,)), 1000)
    assert cluster.name == "jwks|127.0.0.1|8088"
    assert cluster.type == cluster_pb2.Cluster.STATIC
    assert not cluster.HasField("transport_socket")
    http_filter = jwt_filter((provider,))
    assert http_filter is not None
    config = jwt.JwtAuthentication()
    assert http_filter.typed_config.Unpack(config)
    out = config.providers["p"]
    assert out.WhichOneof("jwks_source_specifier") == "remote_jwks"
    assert out.remote_jwks.http_uri.uri == "http://127.0.0.1:8088/keys"
    assert out.remote_jwks.http_uri.cluster == cluster.name
    assert out.remote_jwks.http_uri.timeout.ToMilliseconds() == 2500
    assert out.remote_jwks.cache_duration.seconds > 0


@pytest.mark.parametrize(("uri", "error"), [
    ("ftp://idp/keys", "http:// or https://"), ("https:///keys", "no host"),
    ("http://idp:70000/keys", "not a valid URL"), ("http://u:p@idp/keys", "credentials"),
    ("http://idp:0/keys", "port 0"),
])
def test_bad_jwks_uri_says_why(uri: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_jwks_uri(uri)
