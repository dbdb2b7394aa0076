"""Validation of the traffic API: every unsupported field or bad value is a diagnostic at its line, and
cross-object conflicts are reported with both locations and resolved first-by-name."""

from __future__ import annotations

import pytest

from controlplane.api.common import parse_duration_ms
from controlplane.api.diagnostics import Diagnostic
from controlplane.api.loader import load_policy_texts
from controlplane.api.policyset import PolicySet

SE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec:
  hosts: [a]
  resolution: STATIC
  ports: [{number: 80, name: http}]
  endpoints: [{address: 127.0.0.1, labels: {v: "1"}}]
"""

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec:
  hosts: [a]
  http:
  - name: r
HTTP
    route: [{destination: {host: a}}]
"""

DR = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr}
spec:
  host: a
  trafficPolicy:
POLICY
"""


def load(*documents: str) -> tuple[PolicySet, list[Diagnostic]]:
    return load_policy_texts([("p.yaml", "---\n".join(documents))])


def vs_with(http: str) -> str:
    return VS.replace("HTTP\n", http)


@pytest.mark.parametrize(
    ("http", "field", "message"),
    [
        (
            "    retries: {attempts: 2, retryOn: 'bogus'}\n",
            "spec.http[0].retries.retryOn",
            "unsupported retry",
        ),
        ("    timeout: 5\n", "spec.http[0].timeout", "expected a duration"),
        ("    timeout: 5x\n", "spec.http[0].timeout", "invalid duration"),
        (
            "    match: [{uri: {regex: '(unclosed'}}]\n",
            "spec.http[0].match[0].uri",
            "invalid regular expression",
        ),
        ("    match: [{uri: {exact: /a, prefix: /b}}]\n", "spec.http[0].match[0].uri", "only one of"),
        ("    match: [{uri: {}}]\n", "spec.http[0].match[0].uri", "one of exact, prefix, regex"),
        ("    match: [{headers: {X-Up: {exact: a}}}]\n", "spec.http[0].match[0].headers.X-Up", "lower case"),
        (
            "    match: [{sourceNamespace: x, mystery: 1}]\n",
            "spec.http[0].match[0].mystery",
            "unsupported field",
        ),
        ("    fault: {}\n", "spec.http[0].fault", "at least one"),
        ("    fault: {abort: {grpcStatus: NOPE}}\n", "spec.http[0].fault.abort", "unknown grpcStatus"),
        (
            "    fault: {delay: {fixedDelay: 1s, percent: 5}}\n",
            "spec.http[0].fault.delay.percent",
            "unsupported field",
        ),
        ("    mirrorPercentage: {value: 5}\n", "spec.http[0].mirrorPercentage", "needs mirror"),
        ("    redirect: {uri: /x}\n", "spec.http[0]", "exactly one of route, redirect"),
        (
            "    redirect: {uri: /x, redirectCode: 300}\n",
            "spec.http[0].redirect.redirectCode",
            "unsupported value",
        ),
        ("    delegate: {name: x}\n", "spec.http[0].delegate", "unsupported field"),
        (
            "    corsPolicy: {allowOrigin: ['*']}\n",
            "spec.http[0].corsPolicy.allowOrigin",
            "unsupported field",
        ),
    ],
)
def test_http_field_errors(http: str, field: str, message: str) -> None:
    policy, diagnostics = load(SE, vs_with(http))
    assert policy.virtual_services() == []
    assert diagnostics[0].field == field
    assert message in diagnostics[0].message, diagnostics


def test_weights_required_for_several_destinations() -> None:
    http = "    route:\n    - {destination: {host: a}}\n    - {destination: {host: a}, weight: 0}\n"
    _, diagnostics = load(SE, VS.replace("HTTP\n    route: [{destination: {host: a}}]\n", http))
    assert [d.field for d in diagnostics] == ["spec.http[0].route[0].weight"]
    assert "weight is required" in diagnostics[0].message


@pytest.mark.parametrize(
    ("policy", "field", "message"),
    [
        (
            "    loadBalancer: {simple: PASSTHROUGH}",
            "spec.trafficPolicy.loadBalancer.simple",
            "unsupported value",
        ),
        (
            "    loadBalancer: {consistentHash: {}}",
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "exactly one",
        ),
        (
            "    loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 100}}}",
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "prime",
        ),
        ("    tls: {mode: MUTUAL}", "spec.trafficPolicy.tls", "mode MUTUAL needs credentialName"),
        ("    tls: {mode: SIMPLE, privateKey: /k.pem}", "spec.trafficPolicy.tls",
         "clientCertificate and privateKey go together"),
        ("    tls: {mode: SIMPLE, caCrl: /crl.pem}", "spec.trafficPolicy.tls.caCrl", "unsupported field"),
        (
            "    outlierDetection: {maxEjectionPercent: 101}",
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
            "less than or equal",
        ),
        (
            "    connectionPool: {tcp: {maxConnections: 0}}",
            "spec.trafficPolicy.connectionPool.tcp.maxConnections",
            "greater than or equal",
        ),
        (
            "    portLevelSettings: [{port: {number: 80}}, {port: {number: 80}}]",
            "spec.trafficPolicy.portLevelSettings[1].port.number",
            "duplicate port",
        ),
    ],
)
def test_destination_rule_errors(policy: str, field: str, message: str) -> None:
    loaded, diagnostics = load(SE, DR.replace("POLICY", policy))
    assert loaded.destination_rules() == []
    assert diagnostics[0].field == field
    assert message in diagnostics[0].message


def test_unknown_subset_is_reported_and_answers_503() -> None:
    vs = vs_with("").replace("{host: a}", "{host: a, subset: v9}")
    policy, diagnostics = load(SE, vs)
    assert [(d.line, d.field) for d in diagnostics] == [(17, "spec.http[0].route[0].destination.subset")]
    assert "503" in diagnostics[0].message
    assert policy.virtual_services()  # kept


def test_conflicts_name_both_locations() -> None:
    second = vs_with("").replace("name: vs}", "name: vs2}")
    _, diagnostics = load(SE, vs_with(""), second)
    (d,) = diagnostics
    assert (d.name, d.field) == ("vs2", "spec.hosts[0]")
    assert "VirtualService default/vs (p.yaml:10)" in d.message


def test_destination_rules_merge_subsets_first_policy_wins() -> None:
    one = (
        DR.replace("POLICY", "    loadBalancer: {simple: RANDOM}")
        + "  subsets: [{name: v1, labels: {v: '1'}}]\n"
    )
    two = one.replace("name: dr}", "name: dr2}").replace("name: v1,", "name: v2,")
    policy, diagnostics = load(SE, one, two)
    assert [(d.name, d.field) for d in diagnostics] == [("dr2", "spec.trafficPolicy")]
    _, dr2 = policy.destination_rules()
    assert dr2.spec.traffic_policy is None and [s.name for s in dr2.spec.subsets] == ["v2"]


def test_service_entry_new_fields() -> None:
    bad = SE.replace(
        "  endpoints:", "  addresses: [10.0.0.0/24]\n  workloadSelector: {labels: {app: a}}\n  endpoints:"
    )
    _, diagnostics = load(bad)
    assert [d.field for d in diagnostics] == ["spec.addresses[0]"]
    both = SE.replace("  endpoints:", "  workloadSelector: {labels: {app: a}}\n  endpoints:")
    _, diagnostics = load(both)
    assert [d.field for d in diagnostics] == ["spec.workloadSelector"]


def test_static_service_entry_reports_workload_entry_hostnames() -> None:
    se = SE.replace(
        '  endpoints: [{address: 127.0.0.1, labels: {v: "1"}}]\n', "  workloadSelector: {labels: {app: a}}\n"
    )
    we = (
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: w}\n"
        "spec: {address: a.example.com, labels: {app: a}}\n"
    )
    policy, diagnostics = load(se, we)
    assert [(d.kind, d.field) for d in diagnostics] == [("WorkloadEntry", "spec.address")]
    assert policy.workload_entries()


def test_workload_group_probe_needs_labels_and_one_action() -> None:
    wg = (
        "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: g}\nspec:\n"
        "  probe: {httpGet: {port: 80}, tcpSocket: {port: 80}}\n"
    )
    _, diagnostics = load(wg)
    assert [d.field for d in diagnostics] == ["spec.probe"]
    _, diagnostics = load(wg.replace(", tcpSocket: {port: 80}", ""))
    assert [d.field for d in diagnostics] == ["spec.metadata.labels"]
    _, diagnostics = load(wg.replace(", tcpSocket: {port: 80}", ", initialDelaySeconds: 5"))
    assert "spec.probe.initialDelaySeconds" in [d.field for d in diagnostics]


def test_mesh_config_only_first_applies() -> None:
    mc = (
        "apiVersion: controlplane.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: a}\n"
        "spec: {outboundTrafficPolicy: {mode: REGISTRY_ONLY}}\n"
    )
    policy, diagnostics = load(mc, mc.replace("name: a", "name: b"))
    assert [(d.name, d.message.split(":")[0]) for d in diagnostics] == [("b", "only one MeshConfig applies")]
    config = policy.mesh_config()
    assert config is not None and config.metadata.name == "a"
    _, diagnostics = load(mc.replace("REGISTRY_ONLY", "DENY"))
    assert diagnostics[0].field == "spec.outboundTrafficPolicy.mode"
    _, diagnostics = load(mc.replace("controlplane.io", "networking.istio.io"))
    assert diagnostics[0].field == "apiVersion"


@pytest.mark.parametrize(
    ("text", "ms"),
    [("2s", 2000), ("500ms", 500), ("1.5s", 1500), ("1m30s", 90_000), ("1h", 3_600_000), ("0s", 0)],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms
