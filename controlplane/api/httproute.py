"""VirtualService `http[]` entries (istio/api HTTPRoute and its parts), as pydantic models.

Supported: `name`, `match[]` (uri exact/prefix/regex, `ignoreUriCase`, scheme, method, authority, headers,
`withoutHeaders`, `queryParams`, port, `sourceLabels`, `sourceNamespace`, gateways), weighted `route[]`,
`redirect`, `directResponse`, `rewrite` (uri, uriRegexRewrite, authority), `timeout`, `retries`, `fault`,
`mirror` + `mirrorPercentage`, `corsPolicy`, `headers`. Everything else is an "unsupported field".
See https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPRoute.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from controlplane.api.common import DurationMs, Percent, PositiveDurationMs, StringMatch, UInt32, check_regex
from controlplane.api.destination import Destination, HTTPRouteDestination
from controlplane.api.meta import IstioModel, PortNumber

# Envoy's `retry_on` conditions for HTTP (router filter docs, x-envoy-retry-on and x-envoy-retry-grpc-on).
RETRY_ON_CONDITIONS = frozenset(
    {
        "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
        "retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers",
        "http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
        "unavailable",
    }
)  # fmt: skip

# gRPC status names Istio accepts in `fault.abort.grpcStatus`, with their codes.
GRPC_STATUS = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}  # fmt: skip

HttpStatus = Annotated[int, Field(ge=200, le=599)]


class HTTPMatchRequest(IstioModel):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    without_headers: dict[str, StringMatch] = Field(default_factory=dict)
    query_params: dict[str, StringMatch] = Field(default_factory=dict)
    ignore_uri_case: bool = False
    # Evaluated when the proxy's configuration is generated (Istio does the same): a match whose port,
    # source labels, source namespace or gateways do not fit the proxy is left out.
    port: PortNumber | None = None
    source_labels: dict[str, str] = Field(default_factory=dict)
    source_namespace: str | None = None
    gateways: tuple[str, ...] | None = None


class HTTPRedirect(IstioModel):
    uri: str | None = None
    authority: str | None = None
    port: PortNumber | None = None
    scheme: str | None = None
    # Istio's default is 301 Moved Permanently.
    redirect_code: Literal[301, 302, 303, 307, 308] = 301


class HTTPBody(IstioModel):
    string: str | None = None
    bytes: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> HTTPBody:
        if (self.string is None) == (self.bytes is None):
            raise ValueError("exactly one of string, bytes must be set")
        if self.bytes is not None:
            try:
                base64.b64decode(self.bytes, validate=True)
            except binascii.Error:
                raise ValueError("bytes must be base64") from None
        return self


class HTTPDirectResponse(IstioModel):
    status: HttpStatus
    body: HTTPBody | None = None


class RegexRewrite(IstioModel):
    match: str
    rewrite: str

    @field_validator("match")
    @classmethod
    def _regex(cls, value: str) -> str:
        return check_regex(value)


class HTTPRewrite(IstioModel):
    uri: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None
    authority: str | None = None

    @model_validator(mode="after")
    def _exclusive(self) -> HTTPRewrite:
        if self.uri is not None and self.uri_regex_rewrite is not None:
            raise ValueError("only one of uri, uriRegexRewrite may be set")
        return self


class HTTPRetry(IstioModel):
    attempts: UInt32  # Envoy's num_retries
    per_try_timeout: PositiveDurationMs | None = None
    retry_on: str | None = None

    @field_validator("retry_on")
    @classmethod
    def _conditions(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for token in (part.strip() for part in value.split(",")):
            if token.isdigit() and 100 <= int(token) <= 599:
                continue
            if token not in RETRY_ON_CONDITIONS:
                raise ValueError(f"unsupported retry condition {token!r}")
        return value


class Delay(IstioModel):
    fixed_delay: PositiveDurationMs
    percentage: Percent | None = None


class Abort(IstioModel):
    http_status: HttpStatus | None = None
    grpc_status: str | None = None
    percentage: Percent | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Abort:
        if (self.http_status is None) == (self.grpc_status is None):
            raise ValueError("exactly one of httpStatus, grpcStatus must be set")
        if self.grpc_status is not None and self.grpc_status not in GRPC_STATUS:
            raise ValueError(f"unknown grpcStatus {self.grpc_status!r}")
        return self


class HTTPFaultInjection(IstioModel):
    delay: Delay | None = None
    abort: Abort | None = None

    @model_validator(mode="after")
    def _something(self) -> HTTPFaultInjection:
        if self.delay is None and self.abort is None:
            raise ValueError("at least one of delay, abort must be set")
        return self


class CorsPolicy(IstioModel):
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: DurationMs | None = None
    allow_credentials: bool | None = None


class HeaderOperations(IstioModel):
    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: tuple[str, ...] = ()


class Headers(IstioModel):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPRoute(IstioModel):
    name: str | None = None
    # No match block means "match everything" (prefix "/").
    match: tuple[HTTPMatchRequest, ...] = ()
    route: tuple[HTTPRouteDestination, ...] = ()
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    rewrite: HTTPRewrite | None = None
    timeout: DurationMs | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirror_percentage: Percent | None = None
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None
    # Deprecated in Istio ("websocket upgrades are done automatically"): a route that sets it allows the
    # upgrade (model/routemodel.py `Route.websocket`); the loader reports the deprecation.
    websocket_upgrade: bool = False
