"""The model of a cluster's upstream TLS (decided in model/mtls.py, translated in translate/mtls.py)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class UpstreamTlsMode(StrEnum):
    ISTIO_MUTUAL = "ISTIO_MUTUAL"
    SIMPLE = "SIMPLE"
    MUTUAL = "MUTUAL"


@dataclass(frozen=True)
class UpstreamTls:
    """How a cluster's connections are encrypted. `only_sidecars`: auto mTLS — applies only to endpoints
    marked `tls_mode` (the rest are plaintext)."""

    mode: UpstreamTlsMode
    sni: str = ""
    subject_alt_names: tuple[str, ...] = ()
    # SIMPLE/MUTUAL: the credential whose files hold the client certificate (MUTUAL) and the CA (ca.crt)
    credential: str | None = None
    credential_has_ca: bool = False
    # DestinationRule certificate file paths (client cert, key, CA) behind a `file-...` credential name
    files: tuple[str | None, str | None, str | None] | None = None
    insecure_skip_verify: bool = False
    only_sidecars: bool = False
    http2: bool = False
