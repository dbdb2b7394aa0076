"""The seed mesh's telemetry (config/mesh.yaml, config/telemetry.yaml) and Prometheus configuration
(config/observability/prometheus.yml): what the issue asks for lands on the right proxies.

The Prometheus file lists the local mesh's admin ports, which follow its plan; after a change to the seed
services or the plan, rewrite it with `.venv/bin/python -m controlplane.mesh.observability`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controlplane.api.loader import load_policy_dir, policy_files
from controlplane.api.policyset import PolicySet
from controlplane.mesh.observability import local_prometheus_config
from controlplane.mesh.plan import Ports, local_only, make_plan
from controlplane.model.identity import ProxyIdentity, Role
from controlplane.model.telemetry import LogEncoding, TagSource, build_telemetry

CONFIG = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture(scope="module")
def policy() -> PolicySet:
    loaded, diagnostics = load_policy_dir(CONFIG)
    assert [str(d) for d in diagnostics] == []
    return loaded


def _sampling(policy: PolicySet, identity: ProxyIdentity) -> float | None:
    tracing = build_telemetry(policy, identity).tracing
    return None if tracing is None else tracing.sampling_percent


def test_own_services_at_100_everything_else_at_10(policy: PolicySet) -> None:
    own = ProxyIdentity(labels=(("app", "maximus-core-service"), ("version", "v1")))
    jaeger = ProxyIdentity(labels=(("app", "jaeger"), ("version", "v1")))
    gateway = ProxyIdentity(
        role=Role.GATEWAY,
        namespace="istio-system",
        labels=(("app", "istio-ingressgateway"), ("istio", "ingressgateway")),
    )
    assert (_sampling(policy, own), _sampling(policy, jaeger), _sampling(policy, gateway)) == (100, 10, 10)


def test_custom_tags_and_json_access_log(policy: PolicySet) -> None:
    telemetry = build_telemetry(policy, ProxyIdentity(labels=(("app", "visual-cortex"),)))
    assert telemetry.tracing is not None and telemetry.access_log is not None
    tags = {t.tag: (t.source, t.value, t.default_value) for t in telemetry.tracing.custom_tags}
    assert tags == {
        "environment": (TagSource.LITERAL, "dev", ""),
        "cluster": (TagSource.LITERAL, "vertice-dev", ""),
        "x-correlation-id": (TagSource.HEADER, "x-correlation-id", "none"),
        "x-request-id": (TagSource.HEADER, "x-request-id", ""),
        "user-agent": (TagSource.HEADER, "user-agent", ""),
        "service_version": (TagSource.ENVIRONMENT, "SERVICE_VERSION", "unknown"),
        "brain_region": (TagSource.ENVIRONMENT, "BRAIN_REGION", "unknown"),
    }
    assert (telemetry.tracing.provider.host, telemetry.tracing.provider.port) == ("otel-collector", 4317)
    assert (telemetry.access_log.path, telemetry.access_log.encoding) == ("/dev/stdout", LogEncoding.JSON)


def test_prometheus_config_is_not_policy_and_scrapes_every_local_proxy(policy: PolicySet) -> None:
    prometheus = CONFIG / "observability" / "prometheus.yml"
    assert prometheus not in policy_files(CONFIG)
    config = yaml.safe_load(prometheus.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["controlplane"]["static_configs"][0]["targets"] == ["127.0.0.1:18001"]
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    # `make run` hands out admin ports from 15000 in plan order (controlplane/mesh/plan.py), and starts
    # no stand-ins for the external services (prometheus, grafana, jaeger)
    plan = local_only(make_plan(policy, Ports(15000)), policy)
    assert not {"prometheus-1", "grafana-1", "jaeger-1"} & {p.node_id for p in plan.proxies}
    expected = [str(proxy.admin) for proxy in plan.proxies]
    assert jobs["envoy"]["static_configs"][0]["targets"] == expected, (
        "config/observability/prometheus.yml is stale: run `make generated`"
    )
    assert prometheus.read_text() == local_prometheus_config(CONFIG)
