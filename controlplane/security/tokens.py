"""Proxy credentials: JWTs signed by the control plane (ES256), checked when an xDS stream opens.

Why a token and not an enrolment certificate: Envoy can present only static initial metadata on its xDS
gRPC stream (`initial_metadata` of the bootstrap's grpc_service); it cannot run a CSR flow or fetch a
client certificate from us before it has one. So, like Kuma's dataplane tokens (and Consul's
`x-consul-token`), `controlplane token` prints a signed JWT and `controlplane bootstrap --token-file FILE`
embeds it as an `authorization: Bearer <token>` header on the ADS stream. The server checks it when a
stream opens, and never during it: a running proxy never loses its configuration because its token
expired, and its workload certificate renews over the already-authenticated stream. This is unlike
Istio's VM onboarding, whose one-hour token makes certificate renewal fail on a proxy that has run for
longer (istio/istio#49202). The default TTL is long (one year, `--ttl` for stricter setups); a token
without `exp` never expires (Kuma's default is ten years).

Claims: `iss` (ISSUER), `sub` (`system:serviceaccount:<ns>:<sa>`, Istio's subject shape), `ns`, `sa`,
`role` ("sidecar" or "gateway"), `jti` (a random id, for logs and a future deny list), `iat`, optional
`exp`. The header carries `kid`, a thumbprint of the signing key, so a later key rotation can tell keys
apart. Verification accepts ES256 only: `alg: none`, HS256 with the public key as secret and every other
algorithm are rejected before any signature check (PyJWT's `algorithms=` allow-list).

The signing key is `token-signing-key.pem` (P-256, mode 0600) in the CA directory, so replicas sharing the
directory accept each other's tokens. Matching the claims against the node's claimed namespace, service
account and role (istiod's rule in pilot/pkg/xds/auth.go) is the xDS server's job.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controlplane.security.ca_files import key_pem, pem_of
from controlplane.security.files import CaError, locked, read_private, require_utc, write_atomic
from controlplane.security.spiffe import SpiffeId

TOKEN_KEY = "token-signing-key.pem"
ISSUER = "controlplane"
ALGORITHM = "ES256"
ROLES = ("sidecar", "gateway")
DEFAULT_TOKEN_TTL = timedelta(days=365)
REASONS = ("missing", "malformed", "bad-signature", "expired", "wrong-issuer")


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token says about the proxy presenting it."""

    namespace: str
    service_account: str
    role: str  # "sidecar" | "gateway"
    expires_at: datetime | None
    token_id: str


class TokenError(Exception):
    """A token that does not authenticate; `reason` is one of REASONS (for metrics and logs)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _key_id(public_pem: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(public_pem).digest()[:12]).decode().rstrip("=")


class TokenAuthority:
    """Issues and verifies proxy tokens with the key of one CA directory."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        self._public = key.public_key()
        self.key_id = _key_id(pem_of(self._public))

    @classmethod
    def load_or_create(cls, ca_dir: Path) -> TokenAuthority:
        """The token key of `ca_dir`, generated (0600) on first use; CaError if it cannot be used."""
        path = ca_dir / TOKEN_KEY
        with locked(ca_dir):
            if not path.exists():
                try:
                    write_atomic(path, key_pem(ec.generate_private_key(ec.SECP256R1())), mode=0o600)
                except OSError as e:
                    raise CaError(f"{path}: cannot write the token signing key: {e.strerror or e}") from e
            data = read_private(path)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise CaError(f"{path}: not a readable unencrypted PEM private key ({e}); remove it to have "
                          "a new one generated (tokens signed with it stop working)") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise CaError(f"{path}: the token signing key must be an ECDSA P-256 key (ES256)")
        return cls(key)

    def issue(
        self, *, namespace: str, service_account: str, role: str, ttl: timedelta | None, now: datetime
    ) -> str:
        """A signed token for a proxy of `namespace`/`service_account` with `role`; `ttl` None: no expiry."""
        now = require_utc(now)
        SpiffeId("cluster.local", namespace, service_account)  # same character rules as identities
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if ttl is not None and ttl <= timedelta(0):
            raise ValueError(f"token ttl must be positive, got {ttl}")
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "ns": namespace,
            "sa": service_account,
            "role": role,
            "jti": secrets.token_hex(8),
            "iat": int(now.timestamp()),
        }
        if ttl is not None:
            claims["exp"] = int((now + ttl).timestamp())
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.key_id})

    def verify(self, token: str, *, now: datetime) -> TokenClaims:
        """The claims of a valid token; TokenError with the reason otherwise."""
        now = require_utc(now)
        token = (token or "").strip()
        scheme, _, rest = token.partition(" ")
        if scheme.lower() == "bearer":  # the header value as Envoy sends it
            token = rest.strip()
        if not token:
            raise TokenError("missing", "no token presented")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as e:
            raise TokenError("malformed", f"not a JWT ({e})") from e
        if header.get("alg") != ALGORITHM:
            raise TokenError("bad-signature", f"algorithm {header.get('alg')!r} is not {ALGORITHM}")
        try:
            # the clock is ours (`now`), not PyJWT's: time claims are checked below
            claims = jwt.decode(
                token,
                self._public,
                algorithms=[ALGORITHM],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "verify_iss": False},
            )
        except jwt.InvalidSignatureError as e:
            raise TokenError("bad-signature", "the signature does not verify with our key") from e
        except jwt.InvalidAlgorithmError as e:
            raise TokenError("bad-signature", str(e)) from e
        except jwt.InvalidTokenError as e:
            raise TokenError("malformed", str(e)) from e
        if claims.get("iss") != ISSUER:
            raise TokenError("wrong-issuer", f"issuer {claims.get('iss')!r} is not {ISSUER!r}")
        return _claims(claims, now)


def _claims(claims: dict[str, Any], now: datetime) -> TokenClaims:
    fields = [claims.get(k) for k in ("ns", "sa", "role", "jti")]
    if not all(isinstance(v, str) and v for v in fields) or fields[2] not in ROLES:
        raise TokenError("malformed", "claims ns, sa, role (sidecar|gateway) and jti are required strings")
    ns, sa, role, jti = (str(v) for v in fields)
    exp = claims.get("exp")
    expires_at = None
    if exp is not None:
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise TokenError("malformed", f"exp must be a number, got {exp!r}")
        expires_at = datetime.fromtimestamp(exp, UTC)
        if now >= expires_at:
            raise TokenError("expired", f"expired at {expires_at:%Y-%m-%d %H:%M:%S}Z")
    return TokenClaims(namespace=ns, service_account=sa, role=role, expires_at=expires_at, token_id=jti)
