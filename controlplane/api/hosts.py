"""Host names: how a host written in a VirtualService or DestinationRule finds its ServiceEntry, and which
`:authority` values a sidecar answers for a service.

Our services are ServiceEntry hosts, not Kubernetes Services, and we keep each host exactly as written: it is
the cluster name's last part (`outbound|9101||maximus-core-service`) and the canonical key everywhere. On top
of that, Istio users write Kubernetes-style names, so we accept them the way Istio resolves them:

- A reference (VirtualService `hosts`, any `destination.host`, DestinationRule `host`) first matches a
  ServiceEntry host as written. Otherwise it is expanded like Istio expands short names — `reviews` in
  namespace `shop` → `reviews.shop.svc.cluster.local`, `reviews.shop` → `reviews.shop.svc.cluster.local` —
  and matched against every service's FQDN.
- A service's FQDN: a dot-less host `reviews` declared in namespace `shop` is also
  `reviews.shop.svc.cluster.local`; a host already written as `<name>.<ns>.svc.cluster.local` is its own.
- Namespaces as Istio resolves them: a dot-less host declared in several namespaces (`httpbin` in `foo`
  and in `bar`) is several services, keyed by their FQDNs (`httpbin.foo.svc.cluster.local`, ...), so a
  short reference reaches its own namespace's (`service_key`). A dot-less host declared in one namespace
  keeps its written form as key (and cluster name).
- Domains (sidecar virtual host): the host as written; for dot-less hosts also `name.ns`, `name.ns.svc` and
  the FQDN; for a FQDN-written host also `name.ns.svc`, `name.ns`, and the short `name` for proxies in `ns`
  (Istio's rule: short names only resolve inside the namespace).
"""

from __future__ import annotations

from collections.abc import Iterable

CLUSTER_DOMAIN = "svc.cluster.local"


def fqdn(host: str, namespace: str) -> str | None:
    """The Kubernetes FQDN a service host stands for, or None when it is not Kubernetes-shaped."""
    if "." not in host:
        return f"{host}.{namespace}.{CLUSTER_DOMAIN}"
    if host.endswith(f".{CLUSTER_DOMAIN}") and host.count(".") == 4:
        return host
    return None


def expand_reference(host: str, namespace: str) -> str | None:
    """What Istio makes of a host reference written in `namespace` (ResolveShortnameToFQDN, roughly)."""
    parts = host.split(".")
    if len(parts) == 1:
        return f"{host}.{namespace}.{CLUSTER_DOMAIN}"
    if len(parts) == 2:
        return f"{host}.{CLUSTER_DOMAIN}"
    if len(parts) == 3 and parts[2] == "svc":
        return f"{host}.cluster.local"
    return None


def shared_short_hosts(declared: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Dot-less hosts that (host, namespace) pairs declare in more than one namespace."""
    namespaces: dict[str, set[str]] = {}
    for host, namespace in declared:
        if "." not in host and not host.startswith("*"):
            namespaces.setdefault(host, set()).add(namespace)
    return frozenset(host for host, found in namespaces.items() if len(found) > 1)


def service_key(host: str, namespace: str, shared: frozenset[str]) -> str:
    """The canonical key (and cluster host) of a service host declared in `namespace`."""
    return f"{host}.{namespace}.{CLUSTER_DOMAIN}" if host in shared else host


class HostIndex:
    """Resolves host references to canonical ServiceEntry hosts."""

    def __init__(self, services: Iterable[tuple[str, str]]) -> None:
        """`services`: (host as written, namespace of its ServiceEntry), first declaration first."""
        self._hosts: dict[str, str] = {}
        self._fqdns: dict[str, str] = {}
        for host, namespace in services:
            self._hosts.setdefault(host, host)
            name = fqdn(host, namespace)
            if name is not None:
                self._fqdns.setdefault(name, host)

    def resolve(self, reference: str, namespace: str) -> str | None:
        if reference in self._hosts:
            return reference
        expanded = expand_reference(reference, namespace)
        if expanded is None:
            return self._fqdns.get(reference)
        return self._fqdns.get(expanded)


def domains(host: str, namespace: str, proxy_namespace: str) -> list[str]:
    """The names a sidecar in `proxy_namespace` answers for a service host declared in `namespace`."""
    if "." not in host:
        return [
            host,
            f"{host}.{namespace}",
            f"{host}.{namespace}.svc",
            f"{host}.{namespace}.{CLUSTER_DOMAIN}",
        ]
    name = fqdn(host, namespace)
    if name is None:
        return [host]
    short, ns = host.split(".")[:2]
    out = [host, f"{short}.{ns}.svc", f"{short}.{ns}"]
    if ns == proxy_namespace:
        out.append(short)
    return out


def exported(export_to: tuple[str, ...], namespace: str, proxy_namespace: str) -> bool:
    """Istio's `exportTo` of an object declared in `namespace`, seen by a proxy in `proxy_namespace`:
    empty (Istio's default) or `*` everyone, `.` the object's own namespace, `~` nobody, else the named
    namespaces."""
    if not export_to:
        return True
    return any(
        target == "*" or (target == "." and proxy_namespace == namespace) or target == proxy_namespace
        for target in export_to
        if target != "~"
    )
