"""Private keys never leave the xDS stream of the proxy they belong to: every other view of a snapshot
(/debug/config_dump, `controlplane config`, CSDS, the console) shows a Secret with its key replaced by
`[redacted]`, as Envoy's own /config_dump does."""

from __future__ import annotations

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from controlplane.translate.resources import SECRET

REDACTED = "[redacted]"

# The fields (proto names) of envoy.extensions.transport_sockets.tls.v3 messages that hold secret
# material: every DataSource at or below one is blanked here, and the console's JSON views replace them
# too (ops/console/redact.py reads this list, so the two cannot drift apart).
SECRET_FIELDS = frozenset({"private_key", "password", "session_ticket_keys", "hmac_secret", "generic_secret"})

_DATA_SOURCE = "envoy.config.core.v3.DataSource"


def redacted(type_url: str, message: Message) -> Message:
    """`message` itself, or for a Secret with secret material a copy with each such DataSource replaced
    by `[redacted]`."""
    if type_url != SECRET or not isinstance(message, secret_pb2.Secret):
        return message
    copy = secret_pb2.Secret()
    copy.CopyFrom(message)
    return copy if _blank(copy, inside=False) else message


def _blank(message: Message, inside: bool) -> bool:
    """Blank in place the DataSources below a secret field (`inside`: `message` is one); whether any."""
    found = False
    for field, value in message.ListFields():
        kind = field.message_type
        if kind is None or kind.GetOptions().map_entry:  # no TLS message keeps key material in a map
            continue
        secret = inside or field.name in SECRET_FIELDS
        for item in (value,) if isinstance(value, Message) else value:  # else a repeated field
            if secret and kind.full_name == _DATA_SOURCE:
                item.Clear()
                item.inline_string = REDACTED
                found = True
            else:
                found = _blank(item, secret) or found
    return found


def redacted_any(type_url: str, message: Message, payload: bytes) -> any_pb2.Any:
    """The Any a debug view may show: the cached bytes unless they carry a key."""
    shown = redacted(type_url, message)
    if shown is message:
        return any_pb2.Any.FromString(payload)
    wrapped = any_pb2.Any()
    wrapped.Pack(shown)
    return wrapped
