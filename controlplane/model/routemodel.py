"""Model of one HTTP route: match, action and the per-route features (retries, faults, CORS, headers,
mirroring, hashing). Istio's semantics are already resolved here (defaults applied, destinations resolved
to clusters); no Envoy types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from controlplane.model.cluster_policy import HashKey
from controlplane.model.hashing import cached_hash
from controlplane.model.refs import ClusterRef


class MatchKind(StrEnum):
    EXACT = "EXACT"
    PREFIX = "PREFIX"
    REGEX = "REGEX"
    PRESENT = "PRESENT"


@dataclass(frozen=True)
class StringMatch:
    kind: MatchKind
    value: str = ""


@dataclass(frozen=True)
class HeaderMatch:
    """A header condition; `invert` for Istio's `withoutHeaders` (also ":method", ":authority", ...)."""

    name: str
    match: StringMatch
    invert: bool = False


@dataclass(frozen=True)
class RouteMatch:
    path: StringMatch = StringMatch(MatchKind.PREFIX, "/")
    case_sensitive: bool = True
    headers: tuple[HeaderMatch, ...] = ()
    query_parameters: tuple[tuple[str, StringMatch], ...] = ()

    @property
    def matches_everything(self) -> bool:
        return (
            self.path.kind is MatchKind.PREFIX
            and self.path.value in ("", "/")
            and not self.headers
            and not self.query_parameters
        )


@dataclass(frozen=True)
class WeightedCluster:
    cluster: ClusterRef
    weight: int


@dataclass(frozen=True)
class Forward:
    """Send to one cluster (a single entry) or split by weight. Weight-0 destinations are left out."""

    clusters: tuple[WeightedCluster, ...]


@dataclass(frozen=True)
class Redirect:
    code: int = 301
    path: str | None = None
    authority: str | None = None
    port: int | None = None
    scheme: str | None = None


@dataclass(frozen=True)
class DirectResponse:
    status: int
    body: str | None = None
    # Base64 text of binary bodies (Istio's `body.bytes`).
    body_base64: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    num_retries: int
    retry_on: str
    retriable_status_codes: tuple[int, ...] = ()
    per_try_timeout_ms: int | None = None
    # Istio retries on a different host, except when the cluster hashes requests to one host.
    previous_hosts: bool = True


@dataclass(frozen=True)
class Rewrite:
    prefix: str | None = None
    regex: str | None = None
    regex_substitution: str | None = None
    authority: str | None = None


@dataclass(frozen=True)
class Fault:
    delay_ms: int | None = None
    delay_percent: float = 100.0
    abort_http_status: int | None = None
    abort_grpc_status: int | None = None
    abort_percent: float = 100.0


@dataclass(frozen=True)
class Cors:
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_s: int | None = None
    allow_credentials: bool | None = None


@dataclass(frozen=True)
class HeaderOps:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


@dataclass(frozen=True)
class Mirror:
    cluster: ClusterRef
    percent: float = 100.0


@dataclass(frozen=True)
class Route:
    """One Envoy route: a VirtualService `http[]` entry crossed with one of its `match[]` conditions.

    `http_name` / `match_name` are Istio's names as written (translation derives the route name);
    `is_default` marks the route a service gets when no VirtualService routes it.
    """

    match: RouteMatch
    action: Forward | Redirect | DirectResponse
    http_name: str | None = None
    match_name: str | None = None
    is_default: bool = False
    # Istio's default: 0 = no timeout (Envoy's own default would be 15s).
    timeout_ms: int = 0
    retry: RetryPolicy | None = None
    rewrite: Rewrite | None = None
    fault: Fault | None = None
    cors: Cors | None = None
    request_headers: HeaderOps = field(default_factory=HeaderOps)
    response_headers: HeaderOps = field(default_factory=HeaderOps)
    mirror: Mirror | None = None
    hash_key: HashKey | None = None
    # VirtualService `websocketUpgrade`: the route allows the WebSocket upgrade (RouteAction.upgrade_configs).
    websocket: bool = False

    __hash__ = cached_hash  # hashed as part of memo keys, often

    @property
    def destination(self) -> ClusterRef | None:
        """The single cluster of a forwarding route (None for splits and non-forwarding routes)."""
        if isinstance(self.action, Forward) and len(self.action.clusters) == 1:
            return self.action.clusters[0].cluster
        return None
