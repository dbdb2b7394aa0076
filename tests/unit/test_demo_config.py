"""The demo mesh in config/ (what `make run` serves) loads without a single diagnostic."""

from __future__ import annotations

from pathlib import Path

from controlplane.api.loader import load_policy_dir
from controlplane.build import build_proxy
from controlplane.build.proxy import ProxyIdentity

CONFIG = Path(__file__).resolve().parents[2] / "config"


def test_demo_config_has_no_diagnostics() -> None:
    policy, diagnostics = load_policy_dir(CONFIG)
    assert [str(d) for d in diagnostics] == []
    assert {se.metadata.name for se in policy.service_entries()} >= {
        "maximus-core-service",
        "maximus-predict",
    }
    assert policy.virtual_services()


def test_demo_config_routes_both_services() -> None:
    policy, _ = load_policy_dir(CONFIG)
    model = build_proxy(policy, ProxyIdentity())
    assert model.outbound_http is not None
    authorities = {a for v in model.outbound_http.virtual_hosts for a in v.authorities}
    assert {"maximus-core-service", "maximus-predict"} <= authorities
    prefixes = {r.match.prefix for v in model.outbound_http.virtual_hosts for r in v.routes}
    assert {"/api/v1", "/predict"} <= prefixes
