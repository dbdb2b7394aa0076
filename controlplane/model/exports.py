"""`exportTo`: the policy as one proxy's namespace sees it.

ServiceEntries, VirtualServices and DestinationRules with `exportTo` are visible only to proxies
(sidecars and gateways) of the namespaces they are exported to (api/hosts.exported: `.` own namespace,
`*` all, `~` none, or names); without `exportTo` they are visible everywhere, Istio's default. The build
stage works on the filtered PolicySet, so every later step (registry, routes, clusters) agrees.
"""

from __future__ import annotations

from controlplane.api.destinationrule import DestinationRule
from controlplane.api.hosts import exported
from controlplane.api.policyset import PolicySet
from controlplane.api.serviceentry import ServiceEntry
from controlplane.api.virtualservice import VirtualService


def exported_policy(policy: PolicySet, proxy_namespace: str) -> PolicySet:
    """`policy` without the objects not exported to `proxy_namespace` (the same set when none is)."""
    # only these kinds have `exportTo`, and most objects leave it empty (a reload asks for every namespace
    # its proxies are in: looking at the three kinds' fields is cheaper than testing every object)
    exporting: list[ServiceEntry | VirtualService | DestinationRule] = [
        *policy.service_entries(), *policy.virtual_services(), *policy.destination_rules()]
    hidden = {
        obj.key for obj in exporting
        if obj.spec.export_to and not exported(obj.spec.export_to, obj.metadata.namespace, proxy_namespace)
    }
    if not hidden:
        return policy
    return policy.replace(obj for obj in policy if obj.key not in hidden)
