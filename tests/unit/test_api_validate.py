"""Cross-object validation: what is pruned when objects refer to things that do not exist or conflict."""

from __future__ import annotations

from controlplane.api.diagnostics import Diagnostic
from controlplane.api.loader import load_policy_texts
from controlplane.api.policyset import PolicySet


def service(name: str, hosts: str, ports: str = "[{number: 80, name: http}]") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: {hosts}
  resolution: STATIC
  ports: {ports}
"""


def virtual_service(name: str, hosts: str, http: str, extra: str = "") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: {hosts}
{extra}  http:
{http}"""


def route(host: str, port: int | None = None, name: str = "r") -> str:
    port_line = f"\n        port: {{number: {port}}}" if port else ""
    return f"""\
  - name: {name}
    route:
    - destination:
        host: {host}{port_line}
"""


def load(*documents: str) -> tuple[PolicySet, list[Diagnostic]]:
    return load_policy_texts([("p.yaml", "---\n".join(documents))])


def test_route_to_unknown_host_is_a_warning_and_kept() -> None:
    # Istio keeps the route (its cluster does not exist, Envoy answers 503); istioctl analyze: IST0101.
    policy, diagnostics = load(
        service("a", "[a]"),
        virtual_service("vs", "[a]", route("nowhere", name="bad") + route("a", name="good")),
    )
    (vs,) = policy.virtual_services()
    assert [http.name for http in vs.spec.http] == ["bad", "good"]
    assert [(d.line, d.field, d.severity, d.code) for d in diagnostics] == [
        (18, "spec.http[0].route[0].destination.host", "Warning", "IST0101")
    ]
    assert "not declared by any ServiceEntry; requests get 503" in diagnostics[0].message
    assert str(diagnostics[0]).startswith("Warning [IST0101] p.yaml:18: VirtualService/vs: ")


def test_destination_port_rules() -> None:
    two_ports = "[{number: 80, name: http}, {number: 81, name: other}]"
    policy, diagnostics = load(
        service("a", "[a]", two_ports),
        virtual_service(
            "vs",
            "[a]",
            route("a", name="no-port") + route("a", 82, name="wrong") + route("a", 81, name="ok"),
        ),
    )
    (vs,) = policy.virtual_services()
    # Without port, an HTTP route uses the port the request came in on (Istio); a wrong port is dropped.
    assert [http.name for http in vs.spec.http] == ["no-port", "ok"]
    assert [d.field for d in diagnostics] == ["spec.http[1].route[0].destination.port.number"]


def test_conflicting_hosts_first_object_wins() -> None:
    policy, diagnostics = load(
        service("a", "[shared, only-a]"),
        service("b", "[shared]"),
        virtual_service("vs1", "[shared]", route("shared")),
        virtual_service("vs2", "[shared, only-a]", route("shared")),
    )
    assert [se.metadata.name for se in policy.service_entries()] == ["a"]
    assert [(vs.metadata.name, vs.spec.hosts) for vs in policy.virtual_services()] == [
        ("vs1", ("shared",)),
        ("vs2", ("only-a",)),
    ]
    assert [(d.kind, d.name, d.field) for d in diagnostics] == [
        ("ServiceEntry", "b", "spec.hosts[0]"),
        ("VirtualService", "vs2", "spec.hosts[0]"),
    ]


def test_undeclared_vs_host_is_reported_but_kept() -> None:
    policy, diagnostics = load(service("a", "[a]"), virtual_service("vs", "[a, ghost]", route("a")))
    (vs,) = policy.virtual_services()
    assert vs.spec.hosts == ("a", "ghost")
    assert [(d.field, d.message) for d in diagnostics] == [
        ("spec.hosts[1]",
         "host 'ghost' is not declared by any ServiceEntry; sidecars serve it on port 80 only")
    ]


def test_gateway_only_vs_hosts_are_not_checked() -> None:
    gateway = (
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: ingress}\n"
        "spec:\n  selector: {istio: ingressgateway}\n"
        "  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n"
    )
    _, diagnostics = load(
        service("a", "[a]"),
        virtual_service("vs", "[public.example.com]", route("a"), extra="  gateways: [ingress]\n"),
        gateway,
    )
    assert diagnostics == []
