"""SPIFFE identities of workloads: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.

The path shape is Istio's (and SPIRE's Kubernetes workload registrar's), so an identity we issue reads the
same as Istio's in certificates, `match_subject_alt_names`, and AuthorizationPolicy `principals`
(`<trust domain>/ns/<ns>/sa/<sa>`). Characters follow the SPIFFE ID spec: the trust domain is lower-case
letters, digits, `.`, `-` and `_`; path segments also allow upper-case letters, and are never `.` or `..`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME = "spiffe://"

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


def _check_trust_domain(trust_domain: str) -> None:
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise ValueError(
            f"invalid SPIFFE trust domain {trust_domain!r}: use lower-case letters, digits, '.', '-', '_'"
        )


def _check_segment(what: str, value: str) -> None:
    if not _SEGMENT.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"invalid {what} {value!r} for a SPIFFE ID: use letters, digits, '.', '-', '_'")


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """`spiffe://<td>/ns/<ns>/sa/<sa>`; ValueError if a part has characters SPIFFE does not allow."""
    return str(SpiffeId(trust_domain, namespace, service_account))


@dataclass(frozen=True)
class SpiffeId:
    """A workload identity in Istio's SPIFFE path shape; constructing one validates every part."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        _check_trust_domain(self.trust_domain)
        _check_segment("namespace", self.namespace)
        _check_segment("service account", self.service_account)

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """The identity in `text`; ValueError for anything but `spiffe://<td>/ns/<ns>/sa/<sa>`."""
        if not text.startswith(SCHEME):
            raise ValueError(f"not a SPIFFE ID (must start with {SCHEME}): {text!r}")
        trust_domain, sep, path = text[len(SCHEME) :].partition("/")
        parts = path.split("/")
        if not sep or len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
            raise ValueError(f"not a SPIFFE ID of the form spiffe://<td>/ns/<ns>/sa/<sa>: {text!r}")
        return cls(trust_domain, parts[1], parts[3])

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"
