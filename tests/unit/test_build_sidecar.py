"""The build stage: clusters, virtual hosts, authorities and routes for a sidecar; gateways are empty."""

from __future__ import annotations

import pytest

from controlplane.api.loader import load_policy_texts
from controlplane.api.meta import ObjectMeta
from controlplane.api.policyset import PolicySet
from controlplane.api.serviceentry import ServiceEntry, ServiceEntrySpec, ServicePort
from controlplane.model import build_proxy
from controlplane.model.identity import ProxyIdentity, Role, SocketAddress
from controlplane.model.proxy_model import ClusterRef, Discovery, HostPort, ProxyModel, UpstreamProtocol
from controlplane.translate import names
from controlplane.translate.resources import CLUSTER, LISTENER, ROUTE
from controlplane.translate.translator import translate_proxy


def entry(
    name: str, hosts: tuple[str, ...], ports: tuple[int, ...], resolution: str = "STATIC"
) -> ServiceEntry:
    return ServiceEntry(
        api_version="networking.istio.io/v1",
        kind="ServiceEntry",
        metadata=ObjectMeta(name=name),
        spec=ServiceEntrySpec(
            hosts=hosts,
            ports=tuple(ServicePort(number=port, name=f"p{port}") for port in ports),
            resolution=resolution,  # type: ignore[arg-type]
        ),
    )


def sidecar(policy: PolicySet) -> ProxyModel:
    return build_proxy(policy, ProxyIdentity(outbound_address=SocketAddress("127.0.0.1", 15001)))


def test_gateway_role_without_gateways_gets_clusters_and_readiness_only() -> None:
    policy = PolicySet([entry("a", ("a",), (80,))])
    model = build_proxy(policy, ProxyIdentity(role=Role.GATEWAY))
    assert model.role is Role.GATEWAY and model.outbound_http is None
    assert model.gateway is not None and model.gateway.listeners == ()
    resources = translate_proxy(model)
    assert sorted(resources.by_type[LISTENER]) == []  # no health_address metadata: no readiness listener
    assert sorted(resources.by_type[CLUSTER]) == ["outbound|80||a"]


def test_clusters_and_default_routes() -> None:
    model = sidecar(PolicySet([entry("b", ("b",), (8080,), "DNS"), entry("a", ("a",), (80, 8080))]))
    assert [(c.ref.service, c.discovery) for c in model.clusters] == [
        (HostPort("a", 80), Discovery.EDS),
        (HostPort("a", 8080), Discovery.EDS),
        (HostPort("b", 8080), Discovery.STRICT_DNS),
    ]
    assert model.outbound_http is not None
    hosts = model.outbound_http.virtual_hosts
    assert [(str(v.service), v.authorities[:2]) for v in hosts] == [
        ("a:80", ("a:80", "a")),
        ("a:8080", ("a:8080", "a.default:8080")),
        ("b:8080", ("b:8080", "b")),
    ]
    # Kubernetes-style names of a dot-less host, with the port and (only port / port 80) without.
    assert hosts[2].authorities == (
        "b:8080", "b", "b.default:8080", "b.default", "b.default.svc:8080", "b.default.svc",
        "b.default.svc.cluster.local:8080", "b.default.svc.cluster.local",
    )  # fmt: skip
    assert all(len(v.routes) == 1 and v.routes[0].is_default for v in hosts)
    assert hosts[1].routes[0].destination == ClusterRef(HostPort("a", 8080))


def test_authorities_stay_unique_for_unvalidated_policy() -> None:
    # Two ServiceEntries declaring one host: validation would prune this, the builder must still cope.
    model = sidecar(PolicySet([entry("x", ("dup",), (80,)), entry("y", ("dup",), (80, 81))]))
    assert model.outbound_http is not None
    authorities = [a for v in model.outbound_http.virtual_hosts for a in v.authorities]
    assert len(authorities) == len({a.lower() for a in authorities})
    assert {"dup", "dup:80"} <= set(authorities)


def test_routes_follow_the_virtual_service_and_stop_at_a_catch_all() -> None:
    text = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec:
  hosts: [a]
  resolution: STATIC
  ports: [{number: 80, name: http}, {number: 9000, name: g, protocol: grpc}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [a]
  http:
  - name: one
    match: [{uri: {prefix: /one}}, {name: m, uri: {prefix: /uno}}]
    route: [{destination: {host: a, port: {number: 9000}}}]
  - {name: rest, route: [{destination: {host: a, port: {number: 80}}}]}
  - {name: never, route: [{destination: {host: a, port: {number: 80}}}]}
"""
    policy, diagnostics = load_policy_texts([("p.yaml", text)])
    assert diagnostics == []
    model = sidecar(policy)
    assert model.outbound_http is not None
    grpc_cluster = next(c for c in model.clusters if c.ref.service.port == 9000)
    assert grpc_cluster.protocol is UpstreamProtocol.HTTP2
    for virtual_host in model.outbound_http.virtual_hosts:
        assert [
            (names.route(r), r.match.path.value, r.destination.service.port if r.destination else 0)
            for r in virtual_host.routes
        ] == [
            ("one", "/one", 9000),
            ("one.m", "/uno", 9000),
            ("rest", "/", 80),
        ]


@pytest.mark.parametrize("address", ["127.0.0.1:15001", "[::1]:16000"])
def test_translation_names_and_listener_address(address: str) -> None:
    identity = ProxyIdentity(outbound_address=SocketAddress.parse(address))
    resources = translate_proxy(build_proxy(PolicySet([entry("a", ("a",), (80,))]), identity))
    assert list(resources.by_type[CLUSTER]) == [names.PASSTHROUGH_CLUSTER, "outbound|80||a"]
    assert list(resources.by_type[ROUTE]) == [names.OUTBOUND_HTTP_ROUTE_CONFIG]
    listener = resources.by_type[LISTENER][names.OUTBOUND_HTTP_LISTENER]
    socket = listener.address.socket_address
    assert (socket.address, socket.port_value) == (
        identity.outbound_address.host,
        identity.outbound_address.port,
    )


def test_translation_is_deterministic() -> None:
    entries = [entry(name, (name,), (80, 10, 9)) for name in ("c", "a", "b")]
    first = translate_proxy(sidecar(PolicySet(entries)))
    second = translate_proxy(sidecar(PolicySet(reversed(entries))))
    for type_url, by_name in first.by_type.items():
        assert list(by_name) == sorted(by_name)
        assert [m.SerializeToString(deterministic=True) for m in by_name.values()] == [
            m.SerializeToString(deterministic=True) for m in second.by_type[type_url].values()
        ]
