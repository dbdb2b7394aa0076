"""Small things a new user trips over (issue 15): counters exported before their first event, "1 problem"
not "1 problems", no `-/-: -:` placeholders in a YAML syntax error, gateway shapes described without the
outbound address they never use."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.api.loader import load_policy_dir
from controlplane.app import ControlPlane, Settings
from controlplane.model.identity import ProxyIdentity, Role, SocketAddress


def test_nack_and_bad_request_counters_exist_before_any_event() -> None:
    # a fresh process (this one may have counted events already): what /metrics exports at start
    code = "from prometheus_client import generate_latest; import controlplane.xds.metrics; " \
           "print(generate_latest().decode())"
    text = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for series in ('controlplane_xds_nacks_total{type="clusters"} 0.0',
                   'controlplane_xds_nacks_total{type="routes"} 0.0',
                   'controlplane_xds_bad_requests_total{reason="missing_node"} 0.0',
                   'controlplane_xds_bad_requests_total{reason="malformed"} 0.0'):
        assert series in text, text


def test_yaml_syntax_error_has_no_placeholders(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: ServiceEntry\nspec: [unclosed\n")
    _, diagnostics = load_policy_dir(tmp_path)
    [text] = [str(d) for d in diagnostics]
    assert text.startswith(f"{tmp_path / 'bad.yaml'}:"), text
    assert "-/-" not in text and ": -:" not in text, text


@pytest.mark.asyncio
async def test_reload_log_counts_in_words(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "bad.yaml").write_text("kind: ServiceEntry\nspec: [unclosed\n")
    caplog.set_level(logging.INFO, logger="controlplane.app")
    await ControlPlane(Settings(tmp_path)).reload()  # servers are not started
    loaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded ")]
    assert loaded and ": 0 objects, 1 problem, 0 proxy shapes changed (" in loaded[0], loaded


def test_gateway_shape_is_described_without_an_outbound_address() -> None:
    gateway = ProxyIdentity(role=Role.GATEWAY, namespace="istio-system", labels=(("istio", "ingress"),),
                            health_address=SocketAddress("127.0.0.1", 15021), gateway_bind="127.0.0.1")
    assert gateway.describe() == "gateway/istio-system[istio=ingress] bind 127.0.0.1 health 127.0.0.1:15021"
    sidecar = ProxyIdentity(outbound_address=SocketAddress("127.0.0.1", 15001))
    assert sidecar.describe() == "sidecar/default[]@127.0.0.1:15001"
