"""Re-checking edited VirtualServices without validating the whole policy again (`recheck_routes`).

The common edit of a large mesh changes one route (a timeout, a retry policy, a weight) and nothing another
object's check reads. `validate.validate_policy` is a function of the whole policy (first in key order
wins), so a full run costs as much as the mesh is large; this gives the result a full run would give, for
that edit, at the cost of checking the edited objects only.

What other checks read of a VirtualService (its "footprint"): its hosts and whether it applies to the mesh
(`validate_routes._claim_hosts`: which hosts it claims, hence what later VirtualServices claim), the names
of its `http[]` entries (`validate_gateways.check_rate_limits`), and its file and first line (`Context.where`
in other objects' messages). When every edited object is a VirtualService whose footprint is unchanged,
every other object's checks see what they saw before: their results and diagnostics stay, and each edited
VirtualService is checked again, in key order, against the previous state with its own claims taken back.
Anything else (an added, removed or otherwise edited object, a different footprint, other credentials) is
not handled here: the caller validates everything (None).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from controlplane.api.diagnostics import Diagnostic
from controlplane.api.documents import Source
from controlplane.api.meta import ObjectKey, PolicyObject
from controlplane.api.policyset import PolicySet
from controlplane.api.validate import Validation, remember
from controlplane.api.validate_gateways import check_gateway_refs
from controlplane.api.validate_routes import check_virtual_service
from controlplane.api.virtualservice import VirtualService


def footprint(vs: VirtualService, source: Source) -> tuple[object, ...]:
    """What the checks of other objects read of `vs` (see the module docstring)."""
    spec = vs.spec
    return (spec.hosts, spec.applies_to_mesh, tuple(entry.name for entry in spec.http), source.file,
            source.line)


def recheck_routes(
    result: PolicySet, previous: Validation, changes: Mapping[ObjectKey, tuple[PolicyObject, Source]]
) -> tuple[PolicySet, list[Diagnostic]] | None:
    """`validate_policy` of `previous.given` with `changes` (key → new object and source) applied, given
    `result`, the set `previous` validated; None when the changes are not footprint-preserving route edits."""
    given = previous.given
    edits: list[tuple[ObjectKey, VirtualService, VirtualService, Source]] = []
    for key, (new, source) in changes.items():
        old = given.get(key.kind, key.namespace, key.name)
        old_source = given.source(key)
        if not (isinstance(old, VirtualService) and isinstance(new, VirtualService)
                and old_source is not None and key in previous.routes
                and footprint(old, old_source) == footprint(new, source)):
            return None
        edits.append((key, old, new, source))
    # the order of the full run's VirtualService loop (PolicySet order), so that claims come in that order
    edits.sort(key=lambda edit: (edit[0].namespace, edit[0].name))
    before = previous.ctx
    routed = dict(before.routed)
    for _, old, _, _ in edits:
        for host in old.spec.hosts:
            canonical = before.resolve(host, old.metadata.namespace)
            if canonical is not None and routed.get(canonical) is old:
                del routed[canonical]  # its own claim: taken again (or not) by the new version
    now = given.patched({key: (new, source) for key, _, new, source in edits})
    ctx = dataclasses.replace(before, policy=now, diagnostics=[], routed=routed, reported={})
    routes = dict(previous.routes)
    outputs: dict[ObjectKey, tuple[PolicyObject, Source | None] | None] = {}
    for key, _, new, source in edits:
        route = routes[key] = check_virtual_service(ctx, new)
        checked: PolicyObject | None = route
        if route is not None and route.spec.gateways is not None:
            checked = check_gateway_refs(ctx, [route])[0]
        if (checked is None) != (previous.routes[key] is None):
            return None  # kept before and dropped now, or the reverse: not with an unchanged footprint
        outputs[key] = None if checked is None else (checked, source)
    stale = {id(diagnostic) for key, _, _, _ in edits for diagnostic in before.reported.get(key, ())}
    diagnostics = [diagnostic for diagnostic in previous.diagnostics if id(diagnostic) not in stale]
    diagnostics.extend(ctx.diagnostics)
    reported = dict(before.reported)
    for key, _, _, _ in edits:
        reported.pop(key, None)
    reported.update(ctx.reported)
    policy = result.patched({key: output for key, output in outputs.items() if output is not None})
    ctx = dataclasses.replace(ctx, diagnostics=diagnostics, reported=reported)
    remember(policy, Validation(now, tuple(diagnostics), ctx, routes))
    return policy, diagnostics
