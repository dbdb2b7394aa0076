"""Which processes the local mesh runs, and on which loopback addresses, decided from the policy.

Every endpoint of a ServiceEntry with STATIC resolution on a loopback address (inline `endpoints`, or the
WorkloadEntries its `workloadSelector` picks) becomes one demo service instance listening on that
endpoint's address and ports, with its own sidecar Envoy (node id = instance id, labels = the endpoint's).
Inline endpoints are numbered (`<app>-1`, `<app>-2` ...); a WorkloadEntry's instance is named after it.
When the service has one port and it speaks HTTP, the endpoint address is the sidecar's inbound listener
(as Istio's iptables capture would make it) and the app listens on a port of its own behind it, so traffic
between services goes client app → client sidecar → server sidecar → server app. Other instances (several
ports, TCP) listen on their endpoint addresses themselves. Two gateways are always added: ingress (labels
istio=ingressgateway) and egress (istio=egressgateway). Anything else (DNS services, endpoints elsewhere)
is left to the outside world and listed in `skipped`.

Envoy ports (admin; outbound for sidecars) come from a `Ports` source: consecutive numbers from a base
(stable URLs for `make run`, kept per proxy in run/ports.json so that adding a service or an instance
shifts no other's ports), or numbers the OS picked (tests).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from controlplane.api.common import WorkloadSelector, labels_match
from controlplane.api.gateway import Gateway, ServerKind
from controlplane.api.policyset import PolicySet
from controlplane.api.serviceentry import ServiceEntry, ServicePort
from controlplane.api.workloadentry import WorkloadEntry, WorkloadEntrySpec
from controlplane.model.identity import Role, SocketAddress

LOOPBACK = "127.0.0.1"
GATEWAY_NAMESPACE = "istio-system"
INGRESS = "istio-ingressgateway"
EGRESS = "istio-egressgateway"


class PlanError(ValueError):
    """The policy asks for something the local mesh cannot run (e.g. two services on one address)."""


# OS-chosen ports handed out in this process: the OS often returns a just-closed port again
_given: set[int] = set()


class Ports:
    """Hands out TCP ports: consecutive from `base`, or chosen by the OS when `base` is 0.

    `assigned` ({what: port}, e.g. {"admin:reviews-1": 15004}) makes a port stable: asking again for the
    same `what` gets the same port, whatever else the policy gained or lost meanwhile (the runner keeps
    it in run/ports.json), and new ones never take a port assigned to something else."""

    def __init__(
        self, base: int = 0, host: str = LOOPBACK, assigned: Mapping[str, int] | None = None
    ) -> None:
        self._next = base
        self._host = host
        self.assigned: dict[str, int] = dict(assigned or {})
        self._reserved = set(self.assigned.values())
        self._taken: set[int] = set()
        self._avoided: set[int] = set()

    def avoid(self, ports: Iterable[int]) -> None:
        """Never hand out these (ports the policy's endpoints use)."""
        ports = set(ports)
        self._avoided |= ports
        _given.update(ports)

    def take(self, what: str = "", host: str | None = None) -> int:
        """A port for `what`; `host`: the address it will be bound on (an OS-chosen port is checked
        free there: free on 127.0.0.1 says nothing about 127.0.0.3)."""
        port = self.assigned.get(what) if what else None
        # an assigned port is kept unless the policy now uses it for an endpoint
        if port is None or port in self._avoided or port in self._taken:
            port = self._new(host or self._host)
        self._taken.add(port)
        if what:
            self.assigned[what] = port
        return port

    def _new(self, host: str) -> int:
        if self._next:
            while self._next in _given or self._next in self._reserved or self._next in self._taken:
                self._next += 1
            port = self._next
            self._next += 1
            return port
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _given:
                _given.add(port)
                return port
        raise RuntimeError("the OS keeps handing out the same ports")


@dataclass(frozen=True)
class Instance:
    """One demo service process: a service's endpoint."""

    service: str  # what it answers as (its `app` label, else the ServiceEntry's name)
    host: str  # the ServiceEntry's first host, what clients send as Host
    namespace: str
    version: str
    instance_id: str
    listen: tuple[SocketAddress, ...]  # its endpoint addresses: where the mesh sends its traffic
    labels: tuple[tuple[str, str], ...]
    http: bool = True  # every port speaks HTTP
    # the endpoint's `serviceAccount`: the identity its sidecar proves and its certificate names
    service_account: str = "default"
    app_listen: tuple[SocketAddress, ...] = ()  # where the demo process binds (behind the sidecar's inbound)

    @property
    def binds(self) -> tuple[SocketAddress, ...]:
        return self.app_listen or self.listen


@dataclass(frozen=True)
class Proxy:
    """One Envoy: a gateway or an instance's sidecar."""

    node_id: str
    role: Role
    namespace: str
    labels: tuple[tuple[str, str], ...]
    admin: SocketAddress
    outbound: SocketAddress | None = None
    inbound: SocketAddress | None = None
    app_ports: tuple[int, ...] = ()
    # gateways: where /healthz/ready answers once the gateway has its config (Istio's 15021)
    health: SocketAddress | None = None
    # gateways: where their Gateway servers listen, as `scheme://address:port` (see gateway_urls)
    urls: tuple[str, ...] = ()
    # its identity (Istio's gateways run as <name>-service-account)
    service_account: str = "default"


@dataclass(frozen=True)
class MeshPlan:
    instances: tuple[Instance, ...]
    proxies: tuple[Proxy, ...]
    skipped: tuple[str, ...] = field(default=())

    def sidecar_of(self, instance: Instance) -> Proxy:
        return next(p for p in self.proxies if p.node_id == instance.instance_id)

    def proxy(self, node_id: str) -> Proxy:
        return next(p for p in self.proxies if p.node_id == node_id)

    def instances_of(self, host: str) -> list[Instance]:
        return [i for i in self.instances if i.host == host]


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _selected(policy: PolicySet, namespace: str, selector: WorkloadSelector) -> list[WorkloadEntry]:
    return [
        entry
        for entry in policy.of_kind(WorkloadEntry)
        if entry.metadata.namespace == namespace
        and all(entry.spec.labels.get(k) == v for k, v in selector.labels.items())
    ]


def _workload_id(entry: WorkloadEntry) -> str:
    """A WorkloadEntry's instance is named after it (so adding one renames no other instance)."""
    namespace = entry.metadata.namespace
    return entry.metadata.name if namespace == "default" else f"{entry.metadata.name}.{namespace}"


def _endpoint_port(endpoint: WorkloadEntrySpec, port: ServicePort) -> int:
    # Istio's precedence: the endpoint's ports[<name>], else targetPort, else the port number
    return endpoint.ports.get(port.name) or port.target_port or port.number


def _endpoints(policy: PolicySet) -> Iterator[tuple[ServiceEntry, WorkloadEntrySpec | None, str, str]]:
    """(entry, endpoint or None, why it is skipped or "", the WorkloadEntry's instance id or "") for every
    endpoint of every ServiceEntry."""
    for entry in policy.of_kind(ServiceEntry):
        spec = entry.spec
        endpoints: list[tuple[WorkloadEntrySpec, str]] = [(e, "") for e in spec.endpoints]
        if spec.workload_selector is not None:
            endpoints = [
                (w.spec, _workload_id(w))
                for w in _selected(policy, entry.metadata.namespace, spec.workload_selector)
            ]
        if spec.resolution != "STATIC":
            yield entry, None, f"{spec.resolution} resolution", ""
            continue
        if not endpoints:
            yield entry, None, "no endpoints", ""
        for endpoint, workload in endpoints:
            if is_loopback(endpoint.address):
                yield entry, endpoint, "", workload
            else:
                yield entry, None, f"endpoint {endpoint.address} is not a loopback address", ""


def _instances(policy: PolicySet) -> tuple[list[Instance], list[str]]:
    instances: list[Instance] = []
    skipped: list[str] = []
    owners: dict[SocketAddress, str] = {}
    counts: dict[str, int] = {}
    for entry, endpoint, why, workload in _endpoints(policy):
        name = entry.metadata.name
        if endpoint is None:
            skipped.append(f"{entry.ref}: {why}")
            continue
        labels = {"app": name, **endpoint.labels}
        service = labels["app"]
        counts[service] = counts.get(service, 0) + 1
        instance_id = workload or f"{service}-{counts[service]}"
        listen = tuple(
            sorted(
                {
                    SocketAddress(endpoint.address, _endpoint_port(endpoint, port))
                    for port in entry.spec.ports
                },
                key=str,
            )
        )
        for address in listen:
            if address in owners:
                raise PlanError(
                    f"{address} is an endpoint of both {owners[address]} and {instance_id} "
                    f"({entry.ref}); the local mesh runs one process per address"
                )
            owners[address] = instance_id
        instances.append(
            Instance(
                service,
                entry.spec.hosts[0],
                entry.metadata.namespace,
                labels.get("version", "v1"),
                instance_id,
                listen,
                tuple(sorted(labels.items())),
                http=all(port.is_http for port in entry.spec.ports),
                service_account=endpoint.service_account or "default",
            )
        )
    return instances, skipped


_SCHEMES = {
    ServerKind.HTTP: "http",
    ServerKind.HTTPS: "https",
    ServerKind.PASSTHROUGH: "tls",
    ServerKind.TLS: "tls",
    ServerKind.TCP: "tcp",
}


def gateway_urls(policy: PolicySet, labels: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """Where the servers of the Gateways selecting these labels listen, reachable from this machine:
    `http://127.0.0.1:8080` for a plain HTTP server bound to 0.0.0.0:8080 (targetPort 8080), `https://`
    for TLS-terminated HTTP, `tls://` (SNI routed) and `tcp://` for the others; in policy order, once each."""
    label_map = dict(labels)
    urls: dict[str, None] = {}
    for gateway in policy.of_kind(Gateway):
        if not labels_match(gateway.spec.selector, label_map):
            continue
        for server in gateway.spec.servers:
            host = server.bind_address
            if host in ("0.0.0.0", "::"):
                host = LOOPBACK
            elif ":" in host:
                host = f"[{host}]"
            urls[f"{_SCHEMES[server.kind]}://{host}:{server.port.bind_port}"] = None
    return tuple(urls)


def make_plan(policy: PolicySet, ports: Ports) -> MeshPlan:
    """The processes for `policy`; PlanError when two endpoints share an address."""
    instances, skipped = _instances(policy)
    ports.avoid(address.port for instance in instances for address in instance.listen)
    # the gateways' own listeners (Gateway servers' target ports) are taken too
    ports.avoid(server.port.bind_port for gw in policy.of_kind(Gateway) for server in gw.spec.servers)
    proxies = []
    for node_id, istio_label in ((INGRESS, "ingressgateway"), (EGRESS, "egressgateway")):
        labels = (("app", node_id), ("istio", istio_label))
        admin = SocketAddress(LOOPBACK, ports.take(f"admin:{node_id}"))
        health = SocketAddress(LOOPBACK, ports.take(f"health:{node_id}"))
        urls = gateway_urls(policy, labels)
        proxies.append(
            Proxy(node_id, Role.GATEWAY, GATEWAY_NAMESPACE, labels, admin, health=health, urls=urls,
                  service_account=f"{node_id}-service-account")
        )
    for instance in instances:
        admin = SocketAddress(LOOPBACK, ports.take(f"admin:{instance.instance_id}"))
        outbound = SocketAddress(LOOPBACK, ports.take(f"outbound:{instance.instance_id}"))
        proxies.append(
            Proxy(instance.instance_id, Role.SIDECAR, instance.namespace, instance.labels, admin, outbound,
                  service_account=instance.service_account)
        )
    # app ports last, so that the Envoy ports above do not shift with the kinds of services
    for index, instance in enumerate(instances):
        if instance.http and len(instance.listen) == 1:
            # the app binds the endpoint's own loopback address: the sidecar's inbound forwards to the
            # inbound host (model/inbound.py), so a second instance on 127.0.0.2 is reached at 127.0.0.2
            host = instance.listen[0].host
            app = SocketAddress(host, ports.take(f"app:{instance.instance_id}", host=host))
            instances[index] = replace(instance, app_listen=(app,))
            sidecar = next(i for i, p in enumerate(proxies) if p.node_id == instance.instance_id)
            proxies[sidecar] = replace(proxies[sidecar], inbound=instance.listen[0], app_ports=(app.port,))
    return MeshPlan(tuple(instances), tuple(proxies), tuple(skipped))


# A ServiceEntry annotated `controlplane.io/local-mesh: external` is a real program the user runs (the
# compose stack's Prometheus, Grafana, Jaeger): the local mesh starts no demo app posing as it.
EXTERNAL_ANNOTATION = "controlplane.io/local-mesh"


def local_only(plan: MeshPlan, policy: PolicySet) -> MeshPlan:
    """The plan without the instances (and sidecars) of external services, each listed in `skipped`."""
    external = {
        entry.spec.hosts[0]: entry
        for entry in policy.of_kind(ServiceEntry)
        if entry.metadata.annotations.get(EXTERNAL_ANNOTATION) == "external"
    }
    gone = [i for i in plan.instances if i.host in external]
    if not gone:
        return plan
    ids = {i.instance_id for i in gone}
    skipped = [
        f"{external[i.host].ref}: external — start the real one on {', '.join(map(str, i.listen))}"
        for i in gone
    ]
    return MeshPlan(
        tuple(i for i in plan.instances if i.instance_id not in ids),
        tuple(p for p in plan.proxies if p.node_id not in ids),
        (*plan.skipped, *skipped),
    )
