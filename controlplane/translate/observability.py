"""The shared observability hook of every HTTP connection manager: tracing and access logs.

    apply_observability(manager, model.telemetry, Direction.OUTBOUND)

Every module that builds an `HttpConnectionManager` calls it once, after building the manager and
before packing it into a listener: the sidecar's outbound listener (translate/listeners.py), its inbound
listener (translate/inbound.py), and gateway listeners (translate/gateway*.py — call it with
`Direction.GATEWAY`). That is how tracing covers every hop of a request and access logs every proxy,
whatever features a listener has. The collector clusters the tracer needs are added by the translator
(`telemetry_clusters`), once per proxy, not per listener.

The direction says which side of a hop the manager serves. Envoy takes the span kind from the listener's
`traffic_direction` (INBOUND → server span, OUTBOUND → client span; unspecified counts as inbound), so the
listener modules also set `listener_traffic_direction(direction)` on their listener.
"""

from __future__ import annotations

from enum import StrEnum

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from controlplane.model.telemetry import ProxyTelemetry
from controlplane.translate.access_log import access_log
from controlplane.translate.tracing import collector_cluster, tracing_config


class Direction(StrEnum):
    """Which side of a hop an HTTP connection manager serves."""

    # The sidecar's outbound listener: requests its app sends (client spans).
    OUTBOUND = "outbound"
    # The sidecar's inbound listener: requests for its app (server spans).
    INBOUND = "inbound"
    # A gateway's listener: requests entering (or leaving) the mesh. Istio gives gateway listeners
    # traffic_direction OUTBOUND (they route to services), so gateway spans are client spans as well.
    GATEWAY = "gateway"


def apply_observability(
    manager: hcm.HttpConnectionManager, telemetry: ProxyTelemetry, direction: Direction
) -> None:
    """Add tracing and access logging to `manager` as the proxy's telemetry says (nothing when off)."""
    del direction  # same configuration either way today; kept so callers say which side they are
    if telemetry.tracing is not None:
        manager.tracing.CopyFrom(tracing_config(telemetry.tracing))
    if telemetry.access_log is not None:
        manager.access_log.append(access_log(telemetry.access_log))


def listener_traffic_direction(direction: Direction) -> base_pb2.TrafficDirection.ValueType:
    return base_pb2.INBOUND if direction is Direction.INBOUND else base_pb2.OUTBOUND


def telemetry_clusters(telemetry: ProxyTelemetry, connect_timeout_ms: int) -> list[cluster_pb2.Cluster]:
    """The clusters the proxy's telemetry sends to (the tracing provider's collector)."""
    if telemetry.tracing is None:
        return []
    return [collector_cluster(telemetry.tracing.provider, connect_timeout_ms)]
