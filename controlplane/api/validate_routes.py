"""Cross-object checks of VirtualServices (part of `validate.validate_policy`).

- A mesh VirtualService host already routed by an earlier mesh VirtualService: removed from the later one
  (Istio, too, lets one VirtualService own a host for sidecars). A VirtualService left without hosts is
  dropped. A host no ServiceEntry declares is reported; sidecars ignore it (no ports to route it on).
- Missing references are Warnings (IST0101, `istioctl analyze`'s ReferencedResourceNotFound) and the
  VirtualService applies with Istio's runtime behaviour: an `http[]` destination host no ServiceEntry
  declares answers 503 (Envoy's answer for a missing cluster).
- A `tcp[]` or `tls[]` entry with a destination whose host no ServiceEntry declares, or any entry whose
  port the service lacks (or leaves ambiguous): that entry is dropped, the rest is kept. Requests it would
  have matched fall through to the following entries; with no entry left the host gets its default route.
- A destination `subset` no DestinationRule defines: reported; the entry is kept and answers 503, which is
  what Istio's Envoy does for a route to a cluster that does not exist (we make it an explicit
  direct_response instead of a dangling cluster reference).
- A `mirror` that does not resolve: reported, the mirror is removed and the route kept.

Hosts are resolved with `hosts.HostIndex` (Kubernetes-style short names and FQDNs are accepted).
"""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.api.destination import Destination, HTTPRouteDestination, RouteDestination
from controlplane.api.diagnostics import FieldPath
from controlplane.api.httproute import HTTPRoute
from controlplane.api.validate_context import Context
from controlplane.api.virtualservice import TCPRoute, TLSRoute, VirtualService


def check_virtual_service(ctx: Context, vs: VirtualService) -> VirtualService | None:
    hosts = list(vs.spec.hosts)
    if vs.spec.applies_to_mesh:
        hosts = _claim_hosts(ctx, vs)
        if not hosts:
            return None
    http: list[HTTPRoute] = []
    for index, entry in enumerate(vs.spec.http):
        path: FieldPath = ("spec", "http", index)
        if _destinations_ok(ctx, vs, (*path, "route"), entry.route, http=True):
            http.append(_check_mirror(ctx, vs, path, entry))
    tcp: list[TCPRoute] = [
        entry
        for index, entry in enumerate(vs.spec.tcp)
        if _destinations_ok(ctx, vs, ("spec", "tcp", index, "route"), entry.route)
    ]
    tls: list[TLSRoute] = [
        entry
        for index, entry in enumerate(vs.spec.tls)
        if _destinations_ok(ctx, vs, ("spec", "tls", index, "route"), entry.route)
    ]
    update = {"hosts": tuple(hosts), "http": tuple(http), "tcp": tuple(tcp), "tls": tuple(tls)}
    if all(value == getattr(vs.spec, name) for name, value in update.items()):
        return vs
    return vs.model_copy(update={"spec": vs.spec.model_copy(update=update)})


def _claim_hosts(ctx: Context, vs: VirtualService) -> list[str]:
    hosts: list[str] = []
    for index, host in enumerate(vs.spec.hosts):
        path = ("spec", "hosts", index)
        canonical = ctx.resolve(host, vs.metadata.namespace)
        if canonical is None and host.startswith("*"):
            covered = sorted(h for h in ctx.services if h != host and _wildcard_covers(host, h))
            if covered:
                # Istio would apply it to each of these services' routes; we do not merge it in yet.
                message = (
                    f"unsupported value {host!r}: a wildcard host of a mesh VirtualService is not applied "
                    f"to the services it covers ({', '.join(covered[:3])}); name them in hosts"
                )
                ctx.report(vs, path, message)
                continue
        if canonical is None:
            # Kept (the VirtualService may serve gateways too), but sidecars have no port to route it on.
            message = f"host {host!r} is not declared by any ServiceEntry; sidecars serve it on port 80 only"
            ctx.missing(vs, path, message)
            hosts.append(host)
            continue
        owner = ctx.routed.get(canonical)
        if owner is not None:
            message = f"host {host!r} is already routed by {ctx.where(owner)}; ignored here"
            ctx.report(vs, path, message)
            continue
        ctx.routed[canonical] = vs
        hosts.append(host)
    return hosts


def _destinations_ok(
    ctx: Context,
    vs: VirtualService,
    path: FieldPath,
    route: Sequence[HTTPRouteDestination | RouteDestination],
    http: bool = False,
) -> bool:
    ok = True
    for index, item in enumerate(route):
        ok = _destination_ok(ctx, vs, (*path, index, "destination"), item.destination, http) and ok
    return ok


def _destination_ok(
    ctx: Context, vs: VirtualService, path: FieldPath, destination: Destination, http: bool
) -> bool:
    """False (reported) when the entry must be dropped; an unknown host (HTTP) or subset is a warning:
    Istio keeps the route, and Envoy answers 503 for its missing cluster (so do we, build/httproutes)."""
    host = ctx.resolve(destination.host, vs.metadata.namespace)
    if host is None:
        if http:
            message = f"host {destination.host!r} is not declared by any ServiceEntry; requests get 503"
            ctx.missing(vs, (*path, "host"), message)
            return True
        message = f"host {destination.host!r} is not declared by any ServiceEntry; route dropped"
        ctx.missing(vs, (*path, "host"), message)
        return False
    spec = ctx.services[host][1]
    if destination.port is not None:
        if spec.port(destination.port.number) is None:
            numbers = ", ".join(str(port.number) for port in spec.ports)
            message = f"service {host!r} has no port {destination.port.number} (ports: {numbers})"
            ctx.report(vs, (*path, "port", "number"), f"{message}; route dropped")
            return False
    elif len(spec.ports) > 1 and not http:
        message = f"port is required: service {host!r} has {len(spec.ports)} ports; route dropped"
        ctx.report(vs, (*path, "port"), message)
        return False
    if destination.subset is not None and destination.subset not in ctx.subsets.get(host, {}):
        message = (
            f"subset {destination.subset!r} of {host!r} is not defined by any DestinationRule; "
            "requests routed to it get 503"
        )
        ctx.missing(vs, (*path, "subset"), message)
    return True


def _check_mirror(ctx: Context, vs: VirtualService, path: FieldPath, entry: HTTPRoute) -> HTTPRoute:
    if entry.mirror is None:
        return entry
    host = ctx.resolve(entry.mirror.host, vs.metadata.namespace)
    problem = None
    missing = True
    if host is None:
        problem = (("host",), f"host {entry.mirror.host!r} is not declared by any ServiceEntry")
    else:
        spec = ctx.services[host][1]
        port = entry.mirror.port
        if (port is not None and spec.port(port.number) is None) or (port is None and len(spec.ports) > 1):
            problem = (("port",), f"no single port of service {host!r} matches")
            missing = False
        elif entry.mirror.subset is not None and entry.mirror.subset not in ctx.subsets.get(host, {}):
            problem = (("subset",), f"subset {entry.mirror.subset!r} is not defined by any DestinationRule")
    if problem is None:
        return entry
    if missing:
        ctx.missing(vs, (*path, "mirror", *problem[0]), f"{problem[1]}; mirror dropped")
    else:
        ctx.report(vs, (*path, "mirror", *problem[0]), f"{problem[1]}; mirror dropped")
    return entry.model_copy(update={"mirror": None, "mirror_percentage": None})


def _wildcard_covers(pattern: str, host: str) -> bool:
    return pattern == "*" or host.endswith(pattern[1:])
