"""What the cross-object checks share (`Context`): the policy, the diagnostics so far, and the services,
routes and subsets found valid. Its own module so that `validate` and the checks it runs
(`validate_routes`, `validate_gateways`, `validate_security`) all import it without an import circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.api.destinationrule import DestinationRule
from controlplane.api.diagnostics import (
    ERROR,
    REFERENCED_RESOURCE_NOT_FOUND,
    UNKNOWN,
    WARNING,
    Diagnostic,
    FieldPath,
    format_path,
)
from controlplane.api.hosts import HostIndex
from controlplane.api.meta import ObjectKey, PolicyObject
from controlplane.api.policyset import PolicySet
from controlplane.api.serviceentry import ServiceEntry, ServiceEntrySpec
from controlplane.api.virtualservice import VirtualService

Selector = tuple[tuple[str, str], ...]


@dataclass
class Context:
    """What the checks share: the policy, the diagnostics so far, and the services found valid."""

    policy: PolicySet
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # host → (owning ServiceEntry, its spec); the first ServiceEntry in sorted order wins.
    services: dict[str, tuple[ServiceEntry, ServiceEntrySpec]] = field(default_factory=dict)
    # host → VirtualService that routes it for sidecars.
    routed: dict[str, VirtualService] = field(default_factory=dict)
    # host → {subset name: DestinationRule defining it}.
    subsets: dict[str, dict[str, DestinationRule]] = field(default_factory=dict)
    # (host, workloadSelector) → the first DestinationRule with a trafficPolicy for it / its subsets.
    policy_owners: dict[tuple[str, Selector], DestinationRule] = field(default_factory=dict)
    subset_owners: dict[tuple[str, Selector], dict[str, DestinationRule]] = field(default_factory=dict)
    index: HostIndex = field(default_factory=lambda: HostIndex(()))
    # Dot-less hosts declared in several namespaces: keyed per namespace (hosts.service_key).
    shared: frozenset[str] = frozenset()
    # key → the diagnostics reported about that object (a re-check of one object replaces its own:
    # api/validate_incremental.py)
    reported: dict[ObjectKey, list[Diagnostic]] = field(default_factory=dict)

    def report(
        self, obj: PolicyObject, path: FieldPath, message: str, severity: str = ERROR, code: str = ""
    ) -> None:
        key = obj.key
        source = self.policy.source(key)
        diagnostic = Diagnostic(
            file=source.file if source else UNKNOWN,
            line=source.line_of(path) if source else 0,
            kind=obj.kind,
            name=obj.metadata.name,
            field=format_path(path),
            message=message,
            severity=severity,
            code=code,
        )
        self.diagnostics.append(diagnostic)
        self.reported.setdefault(key, []).append(diagnostic)

    def missing(self, obj: PolicyObject, path: FieldPath, message: str) -> None:
        """A reference to something no object defines: applied anyway, as in Istio (`istioctl analyze`
        reports it as IST0101 ReferencedResourceNotFound)."""
        self.report(obj, path, message, WARNING, REFERENCED_RESOURCE_NOT_FOUND)

    def where(self, obj: PolicyObject) -> str:
        """`ServiceEntry default/a (p.yaml:3)`: the other side of a conflict, with its location."""
        source = self.policy.source(obj.key)
        at = f" ({source.file}:{source.line})" if source else ""
        return f"{obj.kind} {obj.ref}{at}"

    def resolve(self, host: str, namespace: str) -> str | None:
        return self.index.resolve(host, namespace)
