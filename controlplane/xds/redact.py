"""Private keys never leave the xDS stream of the proxy they belong to: every other view of a snapshot
(/debug/config_dump, `controlplane config`, CSDS, the console) shows a Secret with its key replaced by
`[redacted]`, as Envoy's own /config_dump does."""

from __future__ import annotations

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from controlplane.translate.resources import SECRET

REDACTED = "[redacted]"


def redacted(type_url: str, message: Message) -> Message:
    """`message` itself, or for a Secret with a private key a copy without it."""
    if type_url != SECRET or not isinstance(message, secret_pb2.Secret):
        return message
    if not message.HasField("tls_certificate") or not message.tls_certificate.HasField("private_key"):
        return message
    copy = secret_pb2.Secret()
    copy.CopyFrom(message)
    copy.tls_certificate.private_key.Clear()
    copy.tls_certificate.private_key.inline_string = REDACTED
    return copy


def redacted_any(type_url: str, message: Message, payload: bytes) -> any_pb2.Any:
    """The Any a debug view may show: the cached bytes unless they carry a key."""
    shown = redacted(type_url, message)
    if shown is message:
        return any_pb2.Any.FromString(payload)
    wrapped = any_pb2.Any()
    wrapped.Pack(shown)
    return wrapped
