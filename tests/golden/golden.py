"""Shared by the golden tests: run the pipeline on one input case and render the result as text.

Each case is `testdata/in/<case>.yaml`, loaded as a policy directory of one file, built for a default
sidecar (`ProxyIdentity()`: namespace default, outbound listener 127.0.0.1:15001) and translated. A case
may describe its proxy differently in leading comment lines, in node-metadata terms:

    # proxy.namespace: shop
    # proxy.labels: app=web,version=v1
    # proxy.inbound_address: 127.0.0.1:15006
    # proxy.app_ports: 9101,9102
    # proxy.role: gateway
    # proxy.health_address: 0.0.0.0:15021
    # proxy.locality: us-west/zone1/sz1
 The
outputs are JSON objects keyed by resource name with sorted keys, so diffs are stable and reviewable.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from controlplane.api.loader import load_policy_dir
from controlplane.model import build_proxy
from controlplane.model.identity import ProxyIdentity, Role, SocketAddress, parse_ports
from controlplane.translate.resources import SHORT_NAMES, Resources
from controlplane.translate.translator import translate_proxy

TESTDATA = Path(__file__).parent / "testdata"
IN = TESTDATA / "in"
OUT = TESTDATA / "out"

# The resource kinds written per case, plus the diagnostics the case's policy produces.
RESOURCE_KINDS = ("clusters", "endpoints", "listeners", "routes")
OUTPUT_KINDS = (*RESOURCE_KINDS, "diagnostics")


def cases() -> list[str]:
    return sorted(path.stem for path in IN.glob("*.yaml"))


def case_proxy(case: str) -> ProxyIdentity:
    """The proxy a case is built for (its `# proxy.<key>: value` header lines, see the module docstring)."""
    proxy = ProxyIdentity()
    for line in (IN / f"{case}.yaml").read_text(encoding="utf-8").splitlines():
        if not line.startswith("# proxy."):
            continue
        key, _, value = line.removeprefix("# proxy.").partition(":")
        value = value.strip()
        if key == "namespace":
            proxy = dataclasses.replace(proxy, namespace=value)
        elif key == "labels":
            labels = tuple(sorted(tuple(item.split("=", 1)) for item in value.split(",")))
            proxy = dataclasses.replace(proxy, labels=labels)  # type: ignore[arg-type]
        elif key == "inbound_address":
            proxy = dataclasses.replace(proxy, inbound_address=SocketAddress.parse(value))
        elif key == "app_ports":
            proxy = dataclasses.replace(proxy, app_ports=parse_ports(value))
        elif key == "role":
            proxy = dataclasses.replace(proxy, role=Role(value))
        elif key == "locality":
            proxy = dataclasses.replace(proxy, locality=value)
        elif key == "health_address":
            proxy = dataclasses.replace(proxy, health_address=SocketAddress.parse(value))
        else:
            raise ValueError(f"{case}: unknown proxy key {key!r}")
    return proxy


def run_case(case: str) -> tuple[Resources, list[str]]:
    """Resources and diagnostic lines for one case (file names relative to testdata/in)."""
    policy, diagnostics = load_policy_dir(IN / f"{case}.yaml")
    # Messages naming another object's location carry its path too; keep goldens machine-independent.
    lines = [
        str(dataclasses.replace(d, file=Path(d.file).name)).replace(f"{IN}{os.sep}", "") for d in diagnostics
    ]
    return translate_proxy(build_proxy(policy, case_proxy(case))), lines


def render(case: str) -> dict[str, str]:
    """Output file name → expected content, for every output file of the case."""
    resources, diagnostics = run_case(case)
    rendered: dict[str, str] = {}
    for type_url, by_name in resources.by_type.items():
        kind = SHORT_NAMES[type_url]
        if kind not in RESOURCE_KINDS:
            continue
        as_dicts = {
            name: MessageToDict(message, preserving_proto_field_name=True)
            for name, message in by_name.items()
        }
        rendered[f"{case}.{kind}.json"] = json.dumps(as_dicts, indent=2, sort_keys=True) + "\n"
    rendered[f"{case}.diagnostics.txt"] = "".join(f"{line}\n" for line in diagnostics)
    return rendered
