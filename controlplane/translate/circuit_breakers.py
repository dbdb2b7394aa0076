"""Circuit breakers: DestinationRule `connectionPool` limits and `retryBudget` → Cluster `circuit_breakers`.

Istio always writes one DEFAULT-priority thresholds entry and sets every limit it does not get from policy
to 2^32-1 (Envoy's own defaults — 1024 connections, 1024 pending, 1024 requests, 3 retries — are far too
low for a mesh, and a silent 3-retry cap would defeat `retries.attempts`). `track_remaining` exposes the
remaining capacity as stats, as Istio does.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import circuit_breaker_pb2

from controlplane.model.cluster_policy import ClusterPolicy

UNLIMITED = 2**32 - 1


def circuit_breakers(policy: ClusterPolicy) -> circuit_breaker_pb2.CircuitBreakers:
    pool = policy.connection_pool
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds(track_remaining=True)
    thresholds.max_connections.value = pool.max_connections or UNLIMITED
    thresholds.max_pending_requests.value = pool.max_pending_requests or UNLIMITED
    thresholds.max_requests.value = pool.max_requests or UNLIMITED
    thresholds.max_retries.value = pool.max_retries or UNLIMITED
    budget = policy.retry_budget
    if budget is not None:
        retry_budget = thresholds.retry_budget
        retry_budget.SetInParent()
        if budget.budget_percent is not None:
            retry_budget.budget_percent.value = budget.budget_percent
        if budget.min_retry_concurrency is not None:
            retry_budget.min_retry_concurrency.value = budget.min_retry_concurrency
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[thresholds])
