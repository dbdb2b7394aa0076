"""Cross-object checks of the security kinds: PeerAuthentication scopes and DestinationRule `tls` credentials.

- Two PeerAuthentications without selector for the same scope (mesh-wide in the root namespace, or one
  namespace): Istio applies the oldest; we apply the first by name and report the other, which is dropped.
- A PeerAuthentication whose selector matches no known workload (WorkloadEntry or ServiceEntry endpoint
  labels) is a Warning; it applies, since the workload may connect later with those labels.
- DestinationRule `tls.credentialName` (SIMPLE/MUTUAL) names a credential directory
  (`credentials/<name>/`): MUTUAL needs its `tls.crt`/`tls.key`, SIMPLE uses its `ca.crt` when present.
  A missing credential is a Warning (IST0101) and the rule applies, as in Istio, where the secret may be
  created later: the cluster keeps waiting for the SDS secrets, which are never served, so its
  connections fail — never a cluster that silently talks plaintext or trusts other CAs
  (model/clusters.py).
"""

from __future__ import annotations

from collections.abc import Iterator

from controlplane.api.clienttls import ClientTLSSettings
from controlplane.api.common import labels_match
from controlplane.api.destinationrule import DestinationRule, TrafficPolicy
from controlplane.api.diagnostics import REFERENCED_RESOURCE_NOT_FOUND, WARNING, FieldPath
from controlplane.api.peerauthentication import PeerAuthentication
from controlplane.api.validate_context import Context


def check_peer_authentications(ctx: Context, policies: list[PeerAuthentication]) -> list[PeerAuthentication]:
    kept: list[PeerAuthentication] = []
    scopes: dict[str, PeerAuthentication] = {}
    labels = _workload_labels(ctx)
    for pa in policies:
        if pa.spec.selector is None:
            owner = scopes.setdefault(pa.metadata.namespace, pa)
            if owner is not pa:
                ctx.report(pa, ("spec",), f"namespace {pa.metadata.namespace!r} already has a "
                                          f"PeerAuthentication without selector: {ctx.where(owner)}; ignored")
                continue
        elif not any(labels_match(pa.spec.selector.match_labels, known) for ns, known in labels
                     if ns == pa.metadata.namespace):
            # a Warning, as istioctl analyze's: the workload may connect later with these labels
            ctx.report(pa, ("spec", "selector", "matchLabels"),
                       "selects no known workload of its namespace (no WorkloadEntry or ServiceEntry "
                       "endpoint has these labels)", severity=WARNING)
        kept.append(pa)
    return kept


def _workload_labels(ctx: Context) -> list[tuple[str, dict[str, str]]]:
    found = [(we.metadata.namespace, we.spec.labels) for we in ctx.policy.workload_entries()]
    for se, spec in ctx.services.values():
        found.extend((se.metadata.namespace, endpoint.labels) for endpoint in spec.endpoints)
    return found


def check_client_tls(ctx: Context, dr: DestinationRule) -> None:
    """Report `tls.credentialName`s that name no credential (the caller has the rule's paths)."""
    for path, policy in _policies(dr):
        for sub_path, tls in _tls_settings(path, policy):
            name = tls.credential_name
            if name is None:
                continue
            credential = ctx.policy.credentials.get(name)
            if credential is None:
                ctx.report(dr, (*sub_path, "credentialName"),
                           f"no credential {name!r} (expected credentials/{name}/tls.crt, tls.key, ca.crt); "
                           "its clusters wait for it and their connections fail until it exists",
                           severity=WARNING, code=REFERENCED_RESOURCE_NOT_FOUND)
            elif tls.mode == "SIMPLE" and credential.ca_cert is None and not tls.insecure_skip_verify:
                ctx.report(dr, (*sub_path, "credentialName"),
                           f"credential {name!r} has no ca.crt to verify the server with")


def _policies(dr: DestinationRule) -> Iterator[tuple[FieldPath, TrafficPolicy]]:
    if dr.spec.traffic_policy is not None:
        yield ("spec", "trafficPolicy"), dr.spec.traffic_policy
    for index, subset in enumerate(dr.spec.subsets):
        if subset.traffic_policy is not None:
            yield ("spec", "subsets", index, "trafficPolicy"), subset.traffic_policy


def _tls_settings(path: FieldPath, policy: TrafficPolicy) -> Iterator[tuple[FieldPath, ClientTLSSettings]]:
    if policy.tls is not None:
        yield (*path, "tls"), policy.tls
    for index, port in enumerate(policy.port_level_settings):
        if port.tls is not None:
            yield (*path, "portLevelSettings", index, "tls"), port.tls
