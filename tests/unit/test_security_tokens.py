"""Proxy tokens: a valid token's claims; expired, forged, tampered, `alg: none`, HS256-with-the-public-key,
wrong issuer, malformed and missing tokens each rejected with their reason; the key file is private and
shared by everyone loading the same CA directory."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from controlplane.security.ca import CaError
from controlplane.security.tokens import TokenAuthority, TokenClaims, TokenError

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def authority(tmp_path: Path) -> TokenAuthority:
    return TokenAuthority.load_or_create(tmp_path / "ca")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _reason(authority: TokenAuthority, token: str, now: datetime = NOW) -> str:
    with pytest.raises(TokenError) as info:
        authority.verify(token, now=now)
    return info.value.reason


def _web(authority: TokenAuthority, **kw: Any) -> str:
    args: dict[str, Any] = {"namespace": "shop", "service_account": "web", "role": "sidecar",
                            "ttl": timedelta(days=365), "now": NOW}
    args.update(kw)
    return authority.issue(**args)


def test_valid_token(authority: TokenAuthority, tmp_path: Path) -> None:
    token = _web(authority)
    claims = authority.verify(token, now=NOW + timedelta(days=364))
    assert claims == TokenClaims(
        namespace="shop", service_account="web", role="sidecar",
        expires_at=NOW + timedelta(days=365), token_id=claims.token_id,
    )
    assert len(claims.token_id) == 16
    assert authority.verify(f"Bearer {token}", now=NOW) == claims  # the header value as sent
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == authority.key_id
    # the key is private and shared: another load of the same directory verifies it
    key_file = tmp_path / "ca" / "token-signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert TokenAuthority.load_or_create(tmp_path / "ca").verify(token, now=NOW) == claims


def test_gateway_token_without_expiry(authority: TokenAuthority) -> None:
    token = _web(authority, role="gateway", ttl=None, namespace="istio-system", service_account="ingress")
    claims = authority.verify(token, now=NOW + timedelta(days=3650))
    assert (claims.role, claims.namespace, claims.service_account) == ("gateway", "istio-system", "ingress")
    assert claims.expires_at is None


def test_expired(authority: TokenAuthority) -> None:
    token = _web(authority, ttl=timedelta(hours=1))
    assert authority.verify(token, now=NOW + timedelta(minutes=59)).role == "sidecar"
    assert _reason(authority, token, NOW + timedelta(hours=1)) == "expired"


def test_forged_with_another_key(authority: TokenAuthority, tmp_path: Path) -> None:
    other = TokenAuthority.load_or_create(tmp_path / "other-ca")
    assert _reason(authority, _web(other)) == "bad-signature"


def test_tampered_payload(authority: TokenAuthority) -> None:
    header, payload, signature = _web(authority).split(".")
    claims = json.loads(_unb64(payload))
    claims["sa"] = "admin"
    forged = ".".join([header, _b64(json.dumps(claims).encode()), signature])
    assert _reason(authority, forged) == "bad-signature"
    assert _reason(authority, ".".join([header, payload, signature[:-4] + "AAAA"])) == "bad-signature"


def test_alg_none_and_hs256_with_the_public_key(authority: TokenAuthority, tmp_path: Path) -> None:
    claims = jwt.decode(_web(authority), options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert _reason(authority, unsigned) == "bad-signature"
    assert _reason(authority, unsigned.rstrip(".") + ".") == "bad-signature"
    # the classic confusion attack: HMAC keyed with the (public) verification key
    key = serialization.load_pem_private_key(
        (tmp_path / "ca" / "token-signing-key.pem").read_bytes(), password=None
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{hs_header}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert _reason(authority, f"{signing_input}.{_b64(mac)}") == "bad-signature"


def test_wrong_issuer_and_missing_claims(authority: TokenAuthority, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(
        (tmp_path / "ca" / "token-signing-key.pem").read_bytes(), password=None
    )
    base = {"iss": "controlplane", "ns": "shop", "sa": "web", "role": "sidecar", "jti": "x", "iat": 0}
    assert authority.verify(jwt.encode(base, key, algorithm="ES256"), now=NOW).token_id == "x"
    assert _reason(authority, jwt.encode({**base, "iss": "istiod"}, key, algorithm="ES256")) == "wrong-issuer"
    no_sa = {k: v for k, v in base.items() if k != "sa"}
    for broken in ({**base, "role": "admin"}, no_sa, {**base, "exp": "x"}):
        assert _reason(authority, jwt.encode(broken, key, algorithm="ES256")) == "malformed"


@pytest.mark.parametrize("token", ["", "   ", "Bearer "])
def test_missing(authority: TokenAuthority, token: str) -> None:
    assert _reason(authority, token) == "missing"


@pytest.mark.parametrize("token", ["abc", "a.b.c", "eyJhbGciOiJFUzI1NiJ9.e30"])
def test_malformed(authority: TokenAuthority, token: str) -> None:
    assert _reason(authority, token) == "malformed"


def test_issue_rejects_bad_input(authority: TokenAuthority) -> None:
    with pytest.raises(ValueError, match="role"):
        _web(authority, role="admin")
    with pytest.raises(ValueError):
        _web(authority, namespace="bad/ns")
    with pytest.raises(ValueError):
        _web(authority, ttl=timedelta(0))


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    TokenAuthority.load_or_create(tmp_path / "ca")
    (tmp_path / "ca" / "token-signing-key.pem").chmod(0o640)
    with pytest.raises(CaError, match=r"token-signing-key\.pem.*chmod 600"):
        TokenAuthority.load_or_create(tmp_path / "ca")
