"""What every policy kind shares: the pydantic base model, object metadata, the envelope, common types.

Models mirror Istio's protos (istio/api) in field names and nesting, so that growing the subset means adding
fields, never reshaping. YAML uses Istio's camelCase; Python code uses snake_case (aliases generated).

Checks live in two places, chosen by what they need to see:
- one field: a pydantic validator (types, ranges, enums, host syntax);
- several fields of one object: `PolicyObject.check()`, which returns problems with exact field paths
  (pydantic's model validators can only point at the whole model);
- several objects: `controlplane.api.validate`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from controlplane.api.diagnostics import ERROR, FieldPath

DEFAULT_NAMESPACE = "default"

# Istio serves the same schema under all three versions; v1alpha3 is still what most examples use.
ApiVersion = Literal["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"]

# Kubernetes object names (DNS-1123 subdomain) and namespaces (DNS-1123 label).
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# A DNS name. Istio's label check (pkg/config/validation) accepts `[a-zA-Z0-9-]`, so mixed case is valid;
# DNS and Envoy's domain matching are case-insensitive. Wildcards are checked separately.
_HOSTNAME = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*")


@dataclass(frozen=True)
class Problem:
    """An intra-object problem found by `PolicyObject.check()`: the field path (under the object) and why."""

    path: FieldPath
    message: str
    # ERROR makes the object invalid; a WARNING (e.g. a deprecated alias) is reported and the object kept.
    severity: str = ERROR
    code: str = ""


class IstioModel(BaseModel):
    """Base of every policy model: immutable, camelCase in YAML, and strict about unknown fields.

    `extra="forbid"` matters: a field we do not implement yet (e.g. `retries`) must be an error, not silently
    ignored, or users would believe it is in effect.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
    )


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"invalid name {value!r}: must be a lower-case DNS-1123 subdomain")
    return value


def _check_namespace(value: str) -> str:
    if not _LABEL.fullmatch(value):
        raise ValueError(f"invalid namespace {value!r}: must be a lower-case DNS-1123 label")
    return value


def _check_host(value: str) -> str:
    if "*" in value:
        raise ValueError(f"unsupported value {value!r}: wildcard hosts are not supported yet")
    if value.startswith("unix://"):
        # Valid Istio (an endpoint on a Unix domain socket), but our sidecars are not co-located with it.
        raise ValueError(f"unsupported value {value!r}: unix domain socket endpoints are not supported")
    if _HOSTNAME.fullmatch(value) or _is_ip(value):
        return value
    raise ValueError(f"invalid host {value!r}: must be a DNS name or an IP address")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _check_host_pattern(value: str) -> str:
    if value == "*" or (value.startswith("*.") and _HOSTNAME.fullmatch(value[2:])):
        return value
    if "*" in value:
        raise ValueError(f"invalid host {value!r}: a wildcard is '*' or a leading '*.' label")
    return _check_host(value)


# A service host as written in policy (`reviews`, `api.example.com`, `10.0.0.1`); used as-is in names.
Host = Annotated[str, AfterValidator(_check_host)]
# A host that may be a wildcard as Istio allows it: `*` or a leading `*.` label (`*.example.com`).
HostPattern = Annotated[str, AfterValidator(_check_host_pattern)]
PortNumber = Annotated[int, Field(ge=1, le=65535)]


def _check_export_target(value: str) -> str:
    if value in (".", "*", "~") or _LABEL.fullmatch(value):
        return value
    raise ValueError(f"invalid exportTo {value!r}: expected '.', '*', '~' or a namespace")


# An `exportTo` entry (ServiceEntry, VirtualService, DestinationRule): see api/hosts.exported.
ExportTarget = Annotated[str, AfterValidator(_check_export_target)]


class ObjectMeta(IstioModel):
    """The part of Kubernetes' ObjectMeta that policy files may carry."""

    name: Annotated[str, AfterValidator(_check_name)]
    namespace: Annotated[str, AfterValidator(_check_namespace)] = DEFAULT_NAMESPACE
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ObjectKey(NamedTuple):
    """Identity of a policy object. Sorting keys sorts objects deterministically (kind, namespace, name).

    A named tuple rather than a frozen dataclass: keys are hashed and compared in every index of the
    policy (tens of thousands of dict operations per load), and a tuple's hash and equality run in C,
    a dataclass's generated ones in Python (their hash was the third-largest cost of a startup)."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


class PolicyObject(IstioModel):
    """The envelope every kind shares. Subclasses narrow `kind` to a Literal and add `spec`."""

    KIND: ClassVar[str] = ""

    api_version: ApiVersion
    kind: str
    metadata: ObjectMeta

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.kind, self.metadata.namespace, self.metadata.name)

    @property
    def ref(self) -> str:
        """`namespace/name`, the way Istio refers to objects in messages."""
        return f"{self.metadata.namespace}/{self.metadata.name}"

    def check(self) -> Iterator[Problem]:
        """Problems that involve several fields of this object. Any error makes the object invalid."""
        return iter(())


def duplicates(values: list[object]) -> Iterator[int]:
    """Indexes of values equal to an earlier value (for "duplicate port" style checks)."""
    seen: set[object] = set()
    for index, value in enumerate(values):
        if value in seen:
            yield index
        seen.add(value)
