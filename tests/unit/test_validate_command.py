"""`controlplane validate`: severities, exit status, stdin, JSON, "did you mean", deprecated aliases."""

from __future__ import annotations

import io
import json
from pathlib import Path

from controlplane.validate_command import run

SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec:
  hosts: [a]
  resolution: STATIC
  ports: [{number: 80, name: http}]
  endpoints: [{address: 10.0.0.1}]
"""
# A route to a subset nobody defines: Istio applies it (503 at runtime), istioctl analyze warns IST0101.
MISSING_SUBSET = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [a]
  http:
  - route:
    - destination: {host: a, subset: v1}
"""
TYPO = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: typo}
spec:
  hosts: [a]
  http:
  - timout: 1s
    route:
    - destination: {host: a}
"""


def validate(
    target: str, *, stdin: str = "", fail_on: str = "error", output: str = "text"
) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(target, fail_on, output, io.StringIO(stdin), out, err)
    return code, out.getvalue()


def test_warnings_pass_unless_fail_on_warning(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(SERVICE + "---\n" + MISSING_SUBSET)
    code, out = validate(str(tmp_path))
    assert code == 0
    assert out.splitlines() == [
        f"Warning [IST0101] {tmp_path / 'p.yaml'}:17: VirtualService/a: "
        "spec.http[0].route[0].destination.subset: subset 'v1' of 'a' is not defined by any "
        "DestinationRule; requests routed to it get 503"
    ]
    assert validate(str(tmp_path), fail_on="warning")[0] == 1


def test_single_file_and_stdin_and_errors(tmp_path: Path) -> None:
    file = tmp_path / "typo.yaml"
    file.write_text(SERVICE + "---\n" + TYPO)
    code, out = validate(str(file))
    assert code == 1
    assert out.splitlines() == [
        f"{file}:16: VirtualService/typo: spec.http[0].timout: unsupported field; did you mean 'timeout'?"
    ]
    code, out = validate("-", stdin=SERVICE + "---\n" + TYPO)
    assert code == 1
    assert out.startswith("<stdin>:16: VirtualService/typo: spec.http[0].timout: ")
    assert validate(str(tmp_path / "missing"))[0] == 2


def test_json_output() -> None:
    code, out = validate("-", stdin=SERVICE + "---\n" + MISSING_SUBSET, output="json")
    document = json.loads(out)
    assert code == 0
    assert document["ok"] is True
    assert document["objects"] == 2
    assert document["counts"] == {"error": 0, "warning": 1, "info": 0}
    (diagnostic,) = document["diagnostics"]
    assert diagnostic["severity"] == "Warning"
    assert diagnostic["code"] == "IST0101"
    assert (diagnostic["file"], diagnostic["line"]) == ("<stdin>", 17)
    assert diagnostic["field"] == "spec.http[0].route[0].destination.subset"


def test_deprecated_aliases_are_read_as_their_replacement() -> None:
    text = SERVICE + """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec:
  host: a
  trafficPolicy:
    outlierDetection: {consecutiveErrors: 3, interval: 1s}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [a]
  http:
  - route:
    - destination: {host: a}
    mirror: {host: a}
    mirrorPercent: 25
"""
    from controlplane.api.loader import load_policy_texts

    policy, diagnostics = load_policy_texts([("p.yaml", text)])
    assert [(d.severity, d.field, d.message) for d in diagnostics] == [
        ("Warning", "spec.trafficPolicy.outlierDetection.consecutiveErrors",
         "consecutiveErrors is deprecated; read as consecutiveGatewayErrors (use that)"),
        ("Warning", "spec.http[0].mirrorPercent",
         "mirrorPercent is deprecated; read as mirrorPercentage (use that)"),
    ]
    (dr,) = policy.destination_rules()
    assert dr.spec.traffic_policy is not None and dr.spec.traffic_policy.outlier_detection is not None
    assert dr.spec.traffic_policy.outlier_detection.consecutive_gateway_errors == 3
    (vs,) = policy.virtual_services()
    assert vs.spec.http[0].mirror_percentage is not None and vs.spec.http[0].mirror_percentage.value == 25


def test_deprecated_alias_with_its_replacement_is_an_error() -> None:
    text = SERVICE.replace("name: a}", "name: b}", 1) + """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec:
  host: a
  trafficPolicy:
    outlierDetection: {consecutiveErrors: 3, consecutiveGatewayErrors: 2}
"""
    code, out = validate("-", stdin=text)
    assert code == 1
    assert "consecutiveErrors and its replacement consecutiveGatewayErrors are both set" in out
