"""Retries: the model's RetryPolicy → Envoy `RetryPolicy` (Istio core/route/retry/retry.go).

`host_selection_retry_max_attempts: 5` with the previous_hosts predicate makes a retry try another
endpoint, as Istio configures it; the predicate is left out for consistent-hash clusters, where the
request belongs on its one host.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2

from controlplane.model.routemodel import RetryPolicy
from controlplane.translate import names
from controlplane.translate.protos import duration_ms, pack

HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5


def retry_policy(policy: RetryPolicy) -> rc.RetryPolicy:
    out = rc.RetryPolicy(retry_on=policy.retry_on, retriable_status_codes=list(policy.retriable_status_codes))
    out.num_retries.value = policy.num_retries
    if policy.per_try_timeout_ms is not None:
        out.per_try_timeout.CopyFrom(duration_ms(policy.per_try_timeout_ms))
    if policy.previous_hosts:
        out.retry_host_predicate.append(
            rc.RetryPolicy.RetryHostPredicate(
                name=names.PREVIOUS_HOSTS, typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate())
            )
        )
        out.host_selection_retry_max_attempts = HOST_SELECTION_RETRY_MAX_ATTEMPTS
    return out
