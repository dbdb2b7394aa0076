"""Cross-object checks of Gateways, of what refers to them, and of RateLimitPolicies (part of
`validate.validate_policy`). What fails is pruned as narrowly as possible, so a gateway keeps every listener
that is still valid:

- A TLS-terminating server whose `credentialName` has no usable credential (api/credentials.py), or a MUTUAL
  server whose credential has no `ca.crt`: the server is dropped.
- Servers of Gateways with the same `selector` (they land on the same proxies) that bind the same address and
  port: a host already served there by an earlier server is dropped from the later one (Istio reports
  "conflicting servers"), a server left without hosts is dropped; a server whose kind cannot share the port
  with the earlier one (plain HTTP vs TLS vs TCP) is dropped. Gateways with different selectors may still meet
  on a proxy whose labels match both; the build stage then keeps the first (by namespace/name) silently.
- A VirtualService `gateways` entry naming no Gateway (short names are in the VirtualService's namespace):
  reported and removed; `mesh` is always known.
- A RateLimitPolicy destination host no ServiceEntry declares, or a route naming no VirtualService `http[]`
  entry: reported and that limit removed.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.api.gateway import Gateway, Server, ServerKind, split_server_host
from controlplane.api.meta import PolicyObject
from controlplane.api.ratelimit import RateLimitPolicy
from controlplane.api.validate_context import Context
from controlplane.api.virtualservice import MESH_GATEWAY, VirtualService

# Servers that can share a listener: plain HTTP servers merge into one route table; TLS servers (terminated
# or passed through) are filter chains told apart by SNI; a TCP server owns its port.
_FAMILY = {
    ServerKind.HTTP: "plain HTTP",
    ServerKind.HTTPS: "TLS",
    ServerKind.PASSTHROUGH: "TLS",
    ServerKind.TLS: "TLS",
    ServerKind.TCP: "TCP",
}


@dataclass
class _PortUse:
    family: str
    gateway: Gateway
    hosts: dict[str, Gateway]


def gateway_ref(ref: str, namespace: str) -> str:
    """A `gateways:` entry as `namespace/name` (a short name is in the referring object's namespace)."""
    return ref if "/" in ref else f"{namespace}/{ref}"


def check_gateways(ctx: Context, gateways: list[Gateway]) -> list[Gateway]:
    ports: dict[tuple[object, ...], _PortUse] = {}
    out: list[Gateway] = []
    for gw in gateways:
        selector = tuple(sorted(gw.spec.selector.items()))
        servers: list[Server] = []
        for index, server in enumerate(gw.spec.servers):
            path = ("spec", "servers", index)
            if not _credential_ok(ctx, gw, path, server):
                continue
            key = (selector, server.bind_address, server.port.bind_port)
            family = _FAMILY[server.kind]
            use = ports.setdefault(key, _PortUse(family, gw, {}))
            if use.family != family or (family == "TCP" and use.hosts):
                message = (
                    f"port {server.port.bind_port} is already used by a {use.family} server of "
                    f"{ctx.where(use.gateway)}; server ignored"
                )
                ctx.report(gw, (*path, "port", "number"), message)
                continue
            hosts = []
            for h_index, host in enumerate(server.hosts):
                owner = use.hosts.get(split_server_host(host)[1])
                if owner is not None:
                    message = (
                        f"host {host!r} is already served on port {server.port.number} by "
                        f"{ctx.where(owner)}; ignored here"
                    )
                    ctx.report(gw, (*path, "hosts", h_index), message)
                    continue
                hosts.append(host)
            for host in hosts:
                use.hosts[split_server_host(host)[1]] = gw
            if hosts:
                servers.append(
                    server
                    if len(hosts) == len(server.hosts)
                    else server.model_copy(update={"hosts": tuple(hosts)})
                )
        if len(servers) != len(gw.spec.servers):
            gw = gw.model_copy(update={"spec": gw.spec.model_copy(update={"servers": tuple(servers)})})
        out.append(gw)
    return out


def _credential_ok(ctx: Context, gw: Gateway, path: tuple[str | int, ...], server: Server) -> bool:
    tls = server.tls
    if tls is None or tls.credential_name is None:
        return True
    name = tls.credential_name
    credential = ctx.policy.credentials.get(name)
    field = (*path, "tls", "credentialName")
    if credential is None:
        message = (
            f"no usable credential {name!r} (expected credentials/{name}/tls.crt and tls.key next to "
            "the policy); server ignored"
        )
        ctx.report(gw, field, message)
        return False
    if tls.mode == "MUTUAL" and credential.ca_cert is None:
        ctx.report(
            gw, field, f"credential {name!r} has no ca.crt, which tls mode MUTUAL needs; server ignored"
        )
        return False
    return True


def check_gateway_refs(ctx: Context, objects: list[PolicyObject]) -> list[PolicyObject]:
    """VirtualServices with references to missing Gateways removed (and reported)."""
    known = {gw.ref for gw in ctx.policy.of_kind(Gateway)}
    out: list[PolicyObject] = []
    for obj in objects:
        if isinstance(obj, VirtualService) and obj.spec.gateways is not None:
            kept = []
            for index, ref in enumerate(obj.spec.gateways):
                if ref == MESH_GATEWAY or gateway_ref(ref, obj.metadata.namespace) in known:
                    kept.append(ref)
                    continue
                full = gateway_ref(ref, obj.metadata.namespace)
                message = f"gateway {ref!r} not found (no Gateway {full}); ignored"
                ctx.missing(obj, ("spec", "gateways", index), message)
            if len(kept) != len(obj.spec.gateways):
                obj = obj.model_copy(update={"spec": obj.spec.model_copy(update={"gateways": tuple(kept)})})
        out.append(obj)
    return out


def check_rate_limits(ctx: Context, policies: list[RateLimitPolicy]) -> list[RateLimitPolicy]:
    routes = {
        (vs.ref, http.name) for vs in ctx.policy.virtual_services() for http in vs.spec.http if http.name
    }
    out: list[RateLimitPolicy] = []
    for policy in policies:
        namespace = policy.metadata.namespace
        destinations = []
        for index, item in enumerate(policy.spec.destinations):
            if ctx.resolve(item.host, namespace) is None:
                message = f"host {item.host!r} is not declared by any ServiceEntry; limit ignored"
                ctx.report(policy, ("spec", "destinations", index, "host"), message)
                continue
            destinations.append(item)
        kept_routes = []
        for index, route in enumerate(policy.spec.routes):
            if (route.vs_ref(namespace), route.route) not in routes:
                message = (
                    f"no http route named {route.route!r} in VirtualService "
                    f"{route.vs_ref(namespace)}; limit ignored"
                )
                ctx.report(policy, ("spec", "routes", index, "route"), message)
                continue
            kept_routes.append(route)
        update = {"destinations": tuple(destinations), "routes": tuple(kept_routes)}
        if update != {"destinations": policy.spec.destinations, "routes": policy.spec.routes}:
            policy = policy.model_copy(update={"spec": policy.spec.model_copy(update=update)})
        out.append(policy)
    return out
