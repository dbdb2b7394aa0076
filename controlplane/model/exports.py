"""`exportTo`: the policy as one proxy's namespace sees it.

ServiceEntries, VirtualServices and DestinationRules with `exportTo` are visible only to proxies
(sidecars and gateways) of the namespaces they are exported to (api/hosts.exported: `.` own namespace,
`*` all, `~` none, or names); without `exportTo` they are visible everywhere, Istio's default. The build
stage works on the filtered PolicySet, so every later step (registry, routes, clusters) agrees.
"""

from __future__ import annotations

from controlplane.api.destinationrule import DestinationRule
from controlplane.api.hosts import exported
from controlplane.api.meta import PolicyObject
from controlplane.api.policyset import PolicySet
from controlplane.api.serviceentry import ServiceEntry
from controlplane.api.virtualservice import VirtualService


def _export_to(obj: PolicyObject) -> tuple[str, ...]:
    if isinstance(obj, ServiceEntry | VirtualService | DestinationRule):
        return obj.spec.export_to
    return ()


def exported_policy(policy: PolicySet, proxy_namespace: str) -> PolicySet:
    """`policy` without the objects not exported to `proxy_namespace` (the same set when none is)."""
    hidden = [
        obj for obj in policy
        if not exported(_export_to(obj), obj.metadata.namespace, proxy_namespace)
    ]
    if not hidden:
        return policy
    keys = {obj.key for obj in hidden}
    return policy.replace(obj for obj in policy if obj.key not in keys)
