"""Cross-object validation: the checks that need more than one policy object to decide.

Runs after every object has been decoded on its own. What happens to an object that fails here is chosen
to keep as much of the mesh working as possible (Contour's "prune the invalid part" approach), and always
comes with a diagnostic:

- A ServiceEntry host already declared by an earlier ServiceEntry (sorted by namespace/name): the host is
  removed from the later one. A ServiceEntry left without hosts is dropped.
- A VirtualService host already routed by an earlier mesh VirtualService: the host is removed from the
  later one (Istio also lets only one VirtualService own a host for sidecars). A VirtualService left without
  hosts is dropped.
- A mesh VirtualService host that no ServiceEntry declares: reported; sidecars ignore that host (it has
  no ports to build virtual hosts for). The VirtualService is kept for its other hosts.
- An `http[]` route whose destination host no ServiceEntry declares, or whose port the service lacks (or is
  ambiguous): that `http[]` entry is dropped, the rest of the VirtualService is kept. Requests it would
  have matched fall through to the following entries; if no entry is left the host gets its default
  route, exactly as if it had no VirtualService.

Field paths in diagnostics refer to the object as written (indexes before anything was removed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.api.diagnostics import UNKNOWN, Diagnostic, FieldPath, format_path
from controlplane.api.meta import PolicyObject
from controlplane.api.policyset import PolicySet
from controlplane.api.serviceentry import ServiceEntry, ServiceEntrySpec
from controlplane.api.virtualservice import HTTPRoute, VirtualService


@dataclass
class _Context:
    policy: PolicySet
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # host → (owning ServiceEntry, its spec); the first ServiceEntry in sorted order wins.
    services: dict[str, tuple[ServiceEntry, ServiceEntrySpec]] = field(default_factory=dict)
    # host → VirtualService that routes it for sidecars.
    routed: dict[str, VirtualService] = field(default_factory=dict)

    def report(self, obj: PolicyObject, path: FieldPath, message: str) -> None:
        source = self.policy.source(obj.key)
        self.diagnostics.append(
            Diagnostic(
                file=source.file if source else UNKNOWN,
                line=source.line_of(path) if source else 0,
                kind=obj.kind,
                name=obj.metadata.name,
                field=format_path(path),
                message=message,
            )
        )


def validate_policy(policy: PolicySet) -> tuple[PolicySet, list[Diagnostic]]:
    """The policy with cross-object errors pruned (see the module docstring), and what was pruned."""
    ctx = _Context(policy)
    kept: list[PolicyObject] = []
    for obj in policy:
        if isinstance(obj, ServiceEntry):
            result: PolicyObject | None = _service_entry(ctx, obj)
        elif isinstance(obj, VirtualService):
            continue  # after all ServiceEntries: destinations refer to them
        else:
            result = obj
        if result is not None:
            kept.append(result)
    for vs in policy.virtual_services():
        checked = _virtual_service(ctx, vs)
        if checked is not None:
            kept.append(checked)
    return policy.replace(kept), ctx.diagnostics


def _service_entry(ctx: _Context, se: ServiceEntry) -> ServiceEntry | None:
    hosts: list[str] = []
    for index, host in enumerate(se.spec.hosts):
        owner = ctx.services.get(host)
        if owner is not None:
            ctx.report(
                se,
                ("spec", "hosts", index),
                f"host {host!r} is already declared by ServiceEntry {owner[0].ref}; ignored here",
            )
            continue
        hosts.append(host)
    if not hosts:
        return None
    if len(hosts) != len(se.spec.hosts):
        se = se.model_copy(update={"spec": se.spec.model_copy(update={"hosts": tuple(hosts)})})
    for host in hosts:
        ctx.services[host] = (se, se.spec)
    return se


def _virtual_service(ctx: _Context, vs: VirtualService) -> VirtualService | None:
    hosts = list(vs.spec.hosts)
    if vs.spec.applies_to_mesh:
        hosts = _claim_hosts(ctx, vs)
        if not hosts:
            return None
    http = [route for index, route in enumerate(vs.spec.http) if _route_ok(ctx, vs, index, route)]
    if len(hosts) == len(vs.spec.hosts) and len(http) == len(vs.spec.http):
        return vs
    spec = vs.spec.model_copy(update={"hosts": tuple(hosts), "http": tuple(http)})
    return vs.model_copy(update={"spec": spec})


def _claim_hosts(ctx: _Context, vs: VirtualService) -> list[str]:
    hosts: list[str] = []
    for index, host in enumerate(vs.spec.hosts):
        path = ("spec", "hosts", index)
        owner = ctx.routed.get(host)
        if owner is not None:
            message = f"host {host!r} is already routed by VirtualService {owner.ref}; ignored here"
            ctx.report(vs, path, message)
            continue
        if host not in ctx.services:
            # Kept (a later ServiceEntry may declare it), but sidecars have no port to route it on.
            ctx.report(vs, path, f"host {host!r} is not declared by any ServiceEntry; sidecars ignore it")
        ctx.routed[host] = vs
        hosts.append(host)
    return hosts


def _route_ok(ctx: _Context, vs: VirtualService, index: int, http: HTTPRoute) -> bool:
    path: FieldPath = ("spec", "http", index, "route", 0, "destination")
    destination = http.route[0].destination
    service = ctx.services.get(destination.host)
    if service is None:
        message = f"host {destination.host!r} is not declared by any ServiceEntry; route dropped"
        ctx.report(vs, (*path, "host"), message)
        return False
    spec = service[1]
    if destination.port is not None:
        if spec.port(destination.port.number) is None:
            numbers = ", ".join(str(port.number) for port in spec.ports)
            message = f"service {destination.host!r} has no port {destination.port.number} (ports: {numbers})"
            ctx.report(vs, (*path, "port", "number"), f"{message}; route dropped")
            return False
    elif len(spec.ports) > 1:
        message = f"port is required: service {destination.host!r} has {len(spec.ports)} ports; route dropped"
        ctx.report(vs, (*path, "port"), message)
        return False
    return True
