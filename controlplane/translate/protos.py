"""Small protobuf helpers every translate module uses: Any packing, durations, percentages."""

from __future__ import annotations

from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message

# FractionalPercent denominators: percentages with up to four decimals are exact per million.
_PER_MILLION = 10_000


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def duration_ms(milliseconds: int) -> duration_pb2.Duration:
    if milliseconds >= 0:  # the common case, without FromMilliseconds' Python-level normalization
        return duration_pb2.Duration(seconds=milliseconds // 1000, nanos=milliseconds % 1000 * 1_000_000)
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(milliseconds)
    return duration


def fractional_percent(percent: float) -> percent_pb2.FractionalPercent:
    """Istio's `Percent` (0 to 100, double) as Envoy's FractionalPercent: value * 10000 per MILLION."""
    return percent_pb2.FractionalPercent(
        numerator=round(percent * _PER_MILLION), denominator=percent_pb2.FractionalPercent.MILLION
    )
