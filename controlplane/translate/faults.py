"""Fault injection: VirtualService `fault` → per-route `typed_per_filter_config["envoy.filters.http.fault"]`.

The fault filter sits in every sidecar HCM chain before the router with an empty config (which injects
nothing), so only routes carrying a per-route HTTPFault are affected — requests that match other routes
are untouched. Percentages become FractionalPercent per MILLION (Istio's translatePercentToFractionalPercent).
"""

from __future__ import annotations

from envoy.extensions.filters.http.fault.v3 import fault_pb2

from controlplane.model.routemodel import Fault
from controlplane.translate.protos import duration_ms, fractional_percent


def http_fault(fault: Fault) -> fault_pb2.HTTPFault:
    out = fault_pb2.HTTPFault()
    if fault.delay_ms is not None:
        out.delay.fixed_delay.CopyFrom(duration_ms(fault.delay_ms))
        out.delay.percentage.CopyFrom(fractional_percent(fault.delay_percent))
    if fault.abort_http_status is not None or fault.abort_grpc_status is not None:
        if fault.abort_http_status is not None:
            out.abort.http_status = fault.abort_http_status
        else:
            out.abort.grpc_status = fault.abort_grpc_status or 0
        out.abort.percentage.CopyFrom(fractional_percent(fault.abort_percent))
    return out
