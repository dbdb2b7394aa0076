"""Protobuf wire encoding of the few fields whose bytes we cache and splice into responses.

Every stream shares the serialized bytes of a resource version. Protobuf messages concatenate by merging,
so a DiscoveryResponse is its small header (version, type, nonce) serialized normally, followed by the
cached bytes of each `resources` entry. Field numbers are from envoy/service/discovery/v3/discovery.proto
and google/protobuf/any.proto; tests parse the spliced bytes back to check them.
"""

from __future__ import annotations

_LEN = 2  # wire type of length-delimited fields


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """One length-delimited field (string, bytes or embedded message)."""
    return _varint((field_number << 3) | _LEN) + _varint(len(payload)) + payload


def any_bytes(type_url: str, value: bytes) -> bytes:
    """google.protobuf.Any{type_url=1, value=2}."""
    return length_delimited(1, type_url.encode()) + length_delimited(2, value)


def sotw_resource_field(any_payload: bytes) -> bytes:
    """DiscoveryResponse.resources (field 2, repeated Any)."""
    return length_delimited(2, any_payload)


def delta_resource_field(name: str, version: str, any_payload: bytes) -> bytes:
    """DeltaDiscoveryResponse.resources (field 2) holding Resource{version=1, resource=2, name=3}."""
    resource = (
        length_delimited(1, version.encode())
        + length_delimited(2, any_payload)
        + length_delimited(3, name.encode())
    )
    return length_delimited(2, resource)
