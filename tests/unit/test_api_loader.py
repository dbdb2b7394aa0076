"""Loading policy: positions of nested fields, error wording, syntax errors, and what survives an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.api.diagnostics import Diagnostic, format_path
from controlplane.api.kubernetes import KubernetesObject
from controlplane.api.loader import KINDS, load_policy_dir, load_policy_texts
from controlplane.api.serviceentry import ServiceEntry
from controlplane.api.virtualservice import VirtualService

SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
spec:
  hosts:
  - {name}
  resolution: STATIC
  ports:
  - number: 80
    name: http
  endpoints:
  - address: 10.0.0.1
"""

ROUTES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: routes
  namespace: shop
spec:
  hosts:
  - a
  http:
  - match:
    - uri:
        prefix: /x
    route:
    - destination:
        host: a
  - route:
    - destination:
        host: b
        port:
          number: 80
"""


def load(text: str, file: str = "p.yaml") -> tuple[list[str], list[Diagnostic]]:
    policy, diagnostics = load_policy_texts([(file, text)])
    return [str(obj.key) for obj in policy], diagnostics


def test_diagnostic_format() -> None:
    diagnostic = Diagnostic("a/b.yaml", 7, "VirtualService", "reviews", "spec.http[0].route", "bad")
    assert str(diagnostic) == "a/b.yaml:7: VirtualService/reviews: spec.http[0].route: bad"


def test_format_path() -> None:
    assert format_path(("spec", "http", 0, "route", 1, "destination", "host")) == (
        "spec.http[0].route[1].destination.host"
    )
    assert format_path(("metadata", "labels", "app.kubernetes.io/name")) == (
        'metadata.labels["app.kubernetes.io/name"]'
    )
    assert format_path(()) == "-"


def test_valid_objects_load_with_defaults() -> None:
    text = "---\n".join([SERVICE.format(name="a"), SERVICE.format(name="b"), ROUTES])
    policy, diagnostics = load_policy_texts([("p.yaml", text)])
    assert diagnostics == []
    entry, _ = policy.service_entries()
    (vs,) = policy.virtual_services()
    assert isinstance(entry, ServiceEntry) and isinstance(vs, VirtualService)
    assert entry.metadata.namespace == "default"
    assert entry.spec.location == "MESH_EXTERNAL"
    assert vs.metadata.namespace == "shop"
    assert vs.spec.applies_to_mesh
    assert policy.get("VirtualService", "shop", "routes") is vs


@pytest.mark.parametrize(
    ("old", "new", "line", "field"),
    [
        ("        host: b\n", "        host: B!\n", 18, "spec.http[1].route[0].destination.host"),
        (
            "          number: 80\n",
            "          number: 0\n",
            20,
            "spec.http[1].route[0].destination.port.number",
        ),
        ("        prefix: /x\n", "        prefix: 7\n", 12, "spec.http[0].match[0].uri.prefix"),
        ("  - a\n", "  - 'a.*'\n", 8, "spec.hosts[0]"),
    ],
)
def test_nested_field_line(old: str, new: str, line: int, field: str) -> None:
    _, diagnostics = load(ROUTES.replace(old, new))
    assert [(d.line, d.field) for d in diagnostics] == [(line, field)]
    assert diagnostics[0].kind == "VirtualService" and diagnostics[0].name == "routes"


def test_unsupported_field_is_an_error_at_its_line() -> None:
    text = ROUTES.replace(
        "    route:\n    - destination:\n        host: a\n",
        "    route:\n    - destination:\n        host: a\n      headers: {}\n",
    )
    keys, diagnostics = load(text)
    assert keys == []
    assert [str(d) for d in diagnostics] == [
        "p.yaml:16: VirtualService/routes: spec.http[0].route[0].headers: unsupported field"
    ]


def test_unsupported_value() -> None:
    _, diagnostics = load(SERVICE.format(name="a").replace("STATIC", "DNS_ROUND_ROBIN"))
    assert [(d.line, d.field) for d in diagnostics] == [(8, "spec.resolution")]
    assert diagnostics[0].message.startswith("unsupported value 'DNS_ROUND_ROBIN'")


def test_missing_resolution_is_istio_default_none() -> None:
    # NONE (Istio's default) has no endpoints: an entry with endpoints and no resolution is reported.
    _, diagnostics = load(SERVICE.format(name="a").replace("  resolution: STATIC\n", ""))
    assert [(d.line, d.field, d.message) for d in diagnostics] == [
        (11, "spec.endpoints", "resolution NONE has no endpoints; use STATIC or DNS")
    ]
    text = SERVICE.format(name="a").replace("  resolution: STATIC\n", "").split("  endpoints:")[0]
    policy, diagnostics = load_policy_texts([("p.yaml", text)])
    assert diagnostics == []
    assert policy.service_entries()[0].spec.resolution == "NONE"


def test_missing_name_and_bad_api_version() -> None:
    text = SERVICE.format(name="a").replace("  name: a\n", "  labels: {}\n").replace("/v1\n", "/v2\n", 1)
    _, diagnostics = load(text)
    assert [(d.line, d.name, d.field, d.message.split(";")[0]) for d in diagnostics] == [
        (1, "-", "apiVersion", "unsupported value 'networking.istio.io/v2'"),
        (3, "-", "metadata.name", "required field is missing"),
    ]


def test_unknown_kind_and_non_mapping_documents() -> None:
    text = "apiVersion: networking.istio.io/v1\nkind: EnvoyFilter\nmetadata: {name: s}\n---\n- 1\n---\n"
    _, diagnostics = load(text)
    # every kind but the ignored Kubernetes ones, sorted (the list grows with each new kind)
    supported = ", ".join(sorted(kind for kind, cls in KINDS.items() if cls is not KubernetesObject))
    assert [str(d) for d in diagnostics] == [
        f"p.yaml:2: EnvoyFilter/s: kind: unsupported kind 'EnvoyFilter'; supported: {supported}"
        " (other Kubernetes kinds are ignored)",
        "p.yaml:5: expected a mapping (a policy object)",
    ]


def test_yaml_syntax_error_keeps_earlier_documents() -> None:
    text = SERVICE.format(name="a") + "---\nkind: [unclosed\n  foo: bar: baz\n"
    keys, diagnostics = load(text)
    assert keys == ["ServiceEntry/default/a"]
    assert len(diagnostics) == 1
    assert diagnostics[0].file == "p.yaml" and diagnostics[0].line in (15, 16)
    assert diagnostics[0].message.startswith("invalid YAML")


def test_duplicate_key_is_an_error() -> None:
    keys, diagnostics = load(SERVICE.format(name="a") + "spec: {}\n")
    assert keys == []
    assert [(d.line, d.field, d.message) for d in diagnostics] == [(14, "spec", "duplicate key 'spec'")]


def test_invalid_object_does_not_drop_valid_ones(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text(
        SERVICE.format(name="a") + "---\n" + SERVICE.format(name="b").replace("number: 80", "number: 99999")
    )
    (tmp_path / "sub" / "c.yml").write_text(SERVICE.format(name="c"))
    (tmp_path / "broken.yaml").write_text("a: [\n")
    (tmp_path / "notes.txt").write_text("not policy")
    (tmp_path / ".hidden.yaml").write_text("not: policy")
    policy, diagnostics = load_policy_dir(tmp_path)
    assert [obj.metadata.name for obj in policy] == ["a", "c"]
    assert [(Path(d.file).name, d.line, d.name, d.field) for d in diagnostics] == [
        ("a.yaml", 24, "b", "spec.ports[0].number"),
        ("broken.yaml", 2, "-", "-"),
    ]


def test_duplicate_object_keeps_the_first(tmp_path: Path) -> None:
    (tmp_path / "1.yaml").write_text(SERVICE.format(name="a"))
    (tmp_path / "2.yaml").write_text(SERVICE.format(name="a").replace("10.0.0.1", "10.0.0.2"))
    policy, diagnostics = load_policy_dir(tmp_path)
    (entry,) = policy.service_entries()
    assert entry.spec.endpoints[0].address == "10.0.0.1"
    assert [(Path(d.file).name, d.line) for d in diagnostics] == [("2.yaml", 1)]
    assert "first defined at" in diagnostics[0].message


def test_missing_directory_is_a_diagnostic(tmp_path: Path) -> None:
    policy, diagnostics = load_policy_dir(tmp_path / "nope")
    assert len(policy) == 0
    assert [d.message for d in diagnostics] == ["no such file or directory"]


def test_intra_object_checks() -> None:
    text = SERVICE.format(name="a").replace(
        "  - address: 10.0.0.1\n", "  - address: host.example\n    ports: {grpc: 9000}\n"
    )
    text = text.replace(
        "  - number: 80\n    name: http\n", "  - number: 80\n    name: http\n  - number: 80\n    name: web\n"
    )
    _, diagnostics = load(text)
    assert [(d.line, d.field) for d in diagnostics] == [
        (12, "spec.ports[1].number"),
        (15, "spec.endpoints[0].address"),
        (16, "spec.endpoints[0].ports.grpc"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "\tkey: value\n",
        "a: &a [*a]\n",
        "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
        + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(6)
        ),
        "[" * 5000 + "]" * 5000,
        "kind: 5\nmetadata: []\n",
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: Bad_Name}\nspec: null\n",
        "? [complex, key]\n: value\n",
        "!!binary aGVsbG8=\n",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec: {hosts: []}\n",
    ],
)
def test_bad_input_never_raises(text: str) -> None:
    keys, diagnostics = load(text)
    assert keys == []
    assert diagnostics
    assert all(d.line >= 1 for d in diagnostics)


def test_unreadable_file_is_a_diagnostic(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    (tmp_path / "ok.yaml").write_text(SERVICE.format(name="a"))
    policy, diagnostics = load_policy_dir(tmp_path)
    assert len(policy) == 1
    assert [(Path(d.file).name, d.message.split(":")[0]) for d in diagnostics] == [
        ("latin1.yaml", "cannot read file")
    ]
