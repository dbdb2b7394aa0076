"""Who may open an xDS stream: the proxy's credential against the identity its node claims.

Istio's rule (pilot/pkg/xds/auth.go): authenticate the caller, then refuse the stream unless the proven
identity's namespace and service account are the ones the proxy's node metadata claims — otherwise any
client that reaches the port could claim to be the ingress gateway and receive its private keys. Here the
credential is a token the control plane signed (security/tokens.py), sent by Envoy as
`authorization: Bearer <token>` initial metadata (`controlplane bootstrap --token-file`); the role is part
of the claim too, so a sidecar's token cannot open a gateway's stream.

A refused stream gets UNAUTHENTICATED (no, forged or expired credential) or PERMISSION_DENIED (a valid
credential for another identity) before any response, and a log line that names the node.

CSDS on the same port (xds/csds.py) reports configuration, so it takes the same credential: a caller sees
only the proxies of the identity its token proves (`scope`); the mesh-wide view is the admin server's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import grpc

from controlplane.model.identity import ProxyIdentity


@dataclass(frozen=True)
class Refusal(Exception):
    code: grpc.StatusCode
    message: str


class Authenticator(Protocol):
    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]], node_id: str,
                     identity: ProxyIdentity) -> str:
        """The proven principal (a SPIFFE id); raises Refusal."""
        ...

    def scope(self, metadata: Sequence[tuple[str, str | bytes]]) -> Callable[[ProxyIdentity], bool]:
        """Which proxies' status the caller may read (CSDS); raises Refusal."""
        ...


class Claims(Protocol):
    @property
    def namespace(self) -> str: ...
    @property
    def service_account(self) -> str: ...
    @property
    def role(self) -> str: ...


class TokenAuthenticator:
    """Checks `authorization: Bearer` against a verifier (TokenAuthority.verify) and the node's claims."""

    def __init__(self, verify: Callable[[str, datetime], Claims], trust_domain: Callable[[], str],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._verify = verify
        self._trust_domain = trust_domain
        self._clock = clock

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]], node_id: str,
                     identity: ProxyIdentity) -> str:
        claims = self._claims(metadata)
        claimed = (identity.namespace, identity.service_account, identity.role.value)
        proven = (claims.namespace, claims.service_account, claims.role)
        if claimed != proven:
            raise Refusal(grpc.StatusCode.PERMISSION_DENIED,
                          f"node claims namespace/serviceAccount/role {'/'.join(claimed)}, "
                          f"its credential is for {'/'.join(proven)}")
        return f"spiffe://{self._trust_domain()}/ns/{claims.namespace}/sa/{claims.service_account}"

    def scope(self, metadata: Sequence[tuple[str, str | bytes]]) -> Callable[[ProxyIdentity], bool]:
        claims = self._claims(metadata)
        proven = (claims.namespace, claims.service_account, claims.role)
        return lambda identity: (identity.namespace, identity.service_account, identity.role.value) == proven

    def _claims(self, metadata: Sequence[tuple[str, str | bytes]]) -> Claims:
        token = bearer_token(metadata)
        if token is None:
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED,
                          "no credential: the bootstrap needs --token-file (see `controlplane token`)")
        try:
            claims = self._verify(token, self._clock())
        except Exception as exc:  # TokenError and anything a hostile token provokes in the decoder
            reason = getattr(exc, "reason", type(exc).__name__)
            raise Refusal(grpc.StatusCode.UNAUTHENTICATED, f"credential refused: {reason}") from None
        return claims


def bearer_token(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key.lower() != "authorization":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, token = text.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None
