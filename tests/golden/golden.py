"""Shared by the golden tests: run the pipeline on one input case and render the result as text.

Each case is `testdata/in/<case>.yaml`, loaded as a policy directory of one file, built for a default
sidecar (`ProxyIdentity()`: namespace default, outbound listener 127.0.0.1:15001) and translated. The
outputs are JSON objects keyed by resource name with sorted keys, so diffs are stable and reviewable.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from controlplane.api.loader import load_policy_dir
from controlplane.build import build_proxy
from controlplane.build.proxy import ProxyIdentity
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


def run_case(case: str) -> tuple[Resources, list[str]]:
    """Resources and diagnostic lines for one case (file names relative to testdata/in)."""
    policy, diagnostics = load_policy_dir(IN / f"{case}.yaml")
    lines = [str(dataclasses.replace(d, file=Path(d.file).name)) for d in diagnostics]
    return translate_proxy(build_proxy(policy, ProxyIdentity())), lines


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
