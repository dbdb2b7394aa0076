"""Retry policies as Istio sets them (pilot/pkg/networking/core/route/retry/retry.go).

- No `retries`: Istio's default — 2 retries on connect-failure, refused-stream, unavailable, cancelled and
  status 503 (retriable-status-codes), retrying on another host.
- `attempts: 0`: no retry policy at all.
- `attempts` / `perTryTimeout` / `retryOn`: over the default; numeric `retryOn` tokens become retriable
  status codes (and `retriable-status-codes` is added to the conditions).
- Hosts are not avoided on retry (no previous_hosts predicate) when the cluster hashes requests to a host.
"""

from __future__ import annotations

from controlplane.api.httproute import HTTPRetry
from controlplane.model.routemodel import RetryPolicy

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_NUM_RETRIES = 2
DEFAULT_STATUS_CODES = (503,)
RETRIABLE_STATUS_CODES = "retriable-status-codes"


def default_policy(previous_hosts: bool = True) -> RetryPolicy:
    return RetryPolicy(DEFAULT_NUM_RETRIES, DEFAULT_RETRY_ON, DEFAULT_STATUS_CODES, None, previous_hosts)


def policy(retries: HTTPRetry | None, previous_hosts: bool = True) -> RetryPolicy | None:
    if retries is None:
        return default_policy(previous_hosts)
    if retries.attempts == 0:
        return None
    retry_on: str = DEFAULT_RETRY_ON
    codes: tuple[int, ...] = DEFAULT_STATUS_CODES
    if retries.retry_on:
        retry_on, codes = parse_retry_on(retries.retry_on)
    return RetryPolicy(retries.attempts, retry_on, codes, retries.per_try_timeout, previous_hosts)


def parse_retry_on(text: str) -> tuple[str, tuple[int, ...]]:
    """ "5xx,503,reset" → ("5xx,reset,retriable-status-codes", (503,))."""
    conditions: list[str] = []
    codes: list[int] = []
    for token in (part.strip() for part in text.split(",")):
        if not token:
            continue
        if token.isdigit():
            if int(token) not in codes:
                codes.append(int(token))
        elif token not in conditions:
            conditions.append(token)
    if codes and RETRIABLE_STATUS_CODES not in conditions:
        conditions.append(RETRIABLE_STATUS_CODES)
    return ",".join(conditions), tuple(codes)
