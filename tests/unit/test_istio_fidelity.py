"""Valid Istio YAML is not rejected for the wrong reason (each case found in Istio's own examples)."""

from __future__ import annotations

from controlplane.api.diagnostics import Diagnostic
from controlplane.api.loader import load_policy_texts
from controlplane.api.policyset import PolicySet


def load(text: str) -> tuple[PolicySet, list[Diagnostic]]:
    return load_policy_texts([("p.yaml", text)])


def messages(text: str) -> list[tuple[str, str, str]]:
    return [(d.severity, d.field, d.message) for d in load(text)[1]]


def test_workload_group_template_without_address_is_valid() -> None:
    policy, diagnostics = load("""\
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: reviews}
spec:
  metadata: {labels: {app: reviews}}
  template:
    ports: {http: 9080}
""")
    assert diagnostics == []
    assert len(policy.workload_groups()) == 1


def test_workload_group_template_must_not_set_address() -> None:
    assert messages("""\
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: reviews}
spec:
  template: {address: 10.0.0.1}
""") == [("Error", "spec.template.address", "must not be set in a WorkloadGroup template")]


def test_workload_entry_with_network_says_network_is_unsupported() -> None:
    found = messages("""\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: remote}
spec: {network: network-2, labels: {app: foo}}
""")
    assert [field for _, field, _ in found] == ["spec.network"]
    assert found[0][2].startswith("unsupported field")


def test_workload_entry_needs_address_or_network() -> None:
    assert messages("""\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: nothing}
spec: {labels: {app: foo}}
""") == [("Error", "spec.address", "required field is missing (address or network)")]


def test_unix_socket_endpoint_is_unsupported_not_invalid() -> None:
    found = messages("""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: uds}
spec:
  hosts: [example.unix.local]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: unix:///var/run/example/socket}]
""")
    assert found == [(
        "Error", "spec.endpoints[0].address",
        "unsupported value 'unix:///var/run/example/socket': unix domain socket endpoints are not supported",
    )]


def test_delegate_virtual_service_says_delegation_is_unsupported() -> None:
    found = messages("""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: nsa}
spec:
  http:
  - route:
    - destination: {host: productpage-v1.nsA.svc.cluster.local}
""")
    assert found == [(
        "Error", "spec.hosts",
        "a VirtualService without hosts is a delegate; delegation (http[].delegate) is not supported",
    )]


def test_mixed_case_host_labels_are_valid() -> None:
    policy, diagnostics = load("""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: istiod}
spec:
  hosts: [ISTIOD-HOST.DOMAIN]
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
""")
    assert diagnostics == []
    assert policy.service_entries()[0].spec.hosts == ("ISTIOD-HOST.DOMAIN",)


def test_kubernetes_kinds_are_an_info_and_a_service_is_a_service() -> None:
    policy, diagnostics = load("""\
apiVersion: v1
kind: ServiceAccount
metadata: {name: bookinfo-details}
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: shop}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: details}
""")
    assert [(d.severity, d.kind, d.message) for d in diagnostics] == [
        ("Info", "ServiceAccount", "ServiceAccount ignored without Kubernetes")
    ]
    (service,) = policy.service_entries()
    assert service.kind == "Service"
    assert service.spec.hosts == ("details.shop.svc.cluster.local",)
    assert [(p.number, p.name, p.protocol) for p in service.spec.ports] == [(9080, "http", "HTTP")]


def test_export_to_rules() -> None:
    from controlplane.api.hosts import exported

    assert exported((), "a", "b")
    assert exported(("*",), "a", "b")
    assert exported((".",), "a", "a") and not exported((".",), "a", "b")
    assert exported(("b", "c"), "a", "c") and not exported(("b",), "a", "a")
    assert not exported(("~",), "a", "a")


def test_sidecar_egress_hosts() -> None:
    from controlplane.api.sidecar import EgressHost

    own = EgressHost.parse("./*", "prod")
    assert own.matches("reviews", "prod") and not own.matches("reviews", "other")
    fqdn = EgressHost.parse("*/reviews.prod.svc.cluster.local", "x")
    assert fqdn.matches("reviews", "prod") and not fqdn.matches("reviews", "dev")
    wildcard = EgressHost.parse("apis/*.example.com", "x")
    assert wildcard.matches("foo.example.com", "apis") and not wildcard.matches("example.org", "apis")
    excluded = EgressHost.parse("~apis/foo.example.com", "x")
    assert excluded.exclude and excluded.matches("foo.example.com", "apis")
    nothing = EgressHost.parse("~/*", "x")
    assert not nothing.exclude and not nothing.matches("anything", "x")


def test_locality_patterns_and_priorities() -> None:
    from controlplane.model.cluster_policy import LocalitySetting
    from controlplane.model.locality import apply_locality, matches
    from controlplane.model.proxy_model import Endpoint

    assert matches("*", "a/b/c") and matches("us-west/*", "us-west/z1")
    assert matches("us-west", "us-west/z1/s1") and not matches("us-west", "us-westx/z1")
    assert not matches("us-west/z1/*", "us-west/z2/s1")
    endpoints = [Endpoint(f"10.0.0.{i}", 80, locality=loc)
                 for i, loc in enumerate(["r1/z1/s1", "r1/z1/s2", "r2/z1", "r3/z1"])]
    out, weighted = apply_locality(endpoints, "r1/z1/s1", LocalitySetting(failover=(("r1", "r3"),)), True)
    assert not weighted
    assert [e.priority for e in out] == [0, 1, 3, 2]
    # Without outlier detection there is no failover, as in Istio.
    assert [e.priority for e in apply_locality(endpoints, "r1/z1/s1", None, False)[0]] == [0, 0, 0, 0]
    distribute = LocalitySetting(distribute=(("r1/*", (("r1/z1/*", 80), ("r2/*", 20))),))
    out, weighted = apply_locality(endpoints, "r1/z1/s1", distribute, False)
    assert weighted
    assert [(e.address, e.locality_weight) for e in out] == [
        ("10.0.0.0", 40), ("10.0.0.1", 40), ("10.0.0.2", 20)
    ]
