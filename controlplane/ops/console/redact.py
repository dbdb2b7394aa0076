"""Secrets as the admin API may show them: names, certificate identities and expiry, never key bytes.

A Secret's private key (and any other field Envoy treats as secret material) is replaced by a note of its
size before a resource leaves the process as JSON. Certificates are summarised (subject, SPIFFE/DNS names,
expiry) when `cryptography` is importable; their PEM is dropped too, as it is noise in a console.
"""

from __future__ import annotations

import base64
from typing import Any

from controlplane.xds import redact as proto


def _json_name(field: str) -> str:
    """protobuf's JSON name of a proto field: private_key -> privateKey."""
    first, *rest = field.split("_")
    return first + "".join(part.capitalize() for part in rest)


# The secret fields of the xDS redaction, under both names a JSON view may use.
SECRET_FIELDS = proto.SECRET_FIELDS | {_json_name(field) for field in proto.SECRET_FIELDS}
CERT_FIELDS = frozenset({"certificateChain", "trustedCa", "certificate_chain", "trusted_ca"})


def _data_bytes(source: Any) -> bytes | None:
    """The bytes of a DataSource in JSON form, if inline."""
    if not isinstance(source, dict):
        return None
    if "inlineBytes" in source:
        try:
            return base64.b64decode(source["inlineBytes"])
        except ValueError:
            return None
    if "inlineString" in source:
        return str(source["inlineString"]).encode()
    return None


def _redacted(value: Any) -> dict[str, Any]:
    data = _data_bytes(value)
    if isinstance(value, dict) and "filename" in value:
        return {"redacted": True, "filename": value["filename"]}
    return {"redacted": True, "bytes": len(data) if data is not None else None}


def certificate_summary(pem: bytes) -> list[dict[str, Any]]:
    """Subject, SAN URIs/DNS names, serial and validity of each certificate in a PEM bundle."""
    try:
        from cryptography import x509
        from cryptography.x509.oid import ExtensionOID
    except ImportError:  # an optional dependency: without it, the console shows sizes only
        return []
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []
    out = []
    for cert in certs:
        names: list[str] = []
        try:
            san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
            if isinstance(san, x509.SubjectAlternativeName):
                names = [str(v) for v in san.get_values_for_type(x509.UniformResourceIdentifier)]
                names += [str(v) for v in san.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            pass
        out.append({"subject": cert.subject.rfc4514_string(), "names": names,
                    "serial": format(cert.serial_number, "x"),
                    "not_before": cert.not_valid_before_utc.isoformat(),
                    "not_after": cert.not_valid_after_utc.isoformat()})
    return out


def redact(value: Any) -> Any:
    """A copy of a resource's JSON with secret material replaced and certificates summarised."""
    if isinstance(value, list):
        return [redact(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in SECRET_FIELDS:
            out[key] = _redacted(item)
        elif key in CERT_FIELDS and isinstance(item, dict) and {"inlineBytes", "inlineString"} & set(item):
            data = _data_bytes(item) or b""
            out[key] = {"certificates": certificate_summary(data), "bytes": len(data)}
        else:
            out[key] = redact(item)
    return out
