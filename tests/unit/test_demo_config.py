"""The seed mesh in config/ (what `make run` serves) loads without a diagnostic, and every number issue 3
asks for lands in the generated Envoy configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from controlplane.api.loader import load_policy_dir
from controlplane.model import build_proxy
from controlplane.model.identity import ProxyIdentity
from controlplane.translate import names
from controlplane.translate.resources import CLUSTER, LISTENER, ROUTE
from controlplane.translate.translator import translate_proxy

CONFIG = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture(scope="module")
def envoy() -> dict[str, dict[str, Any]]:
    policy, diagnostics = load_policy_dir(CONFIG)
    assert [str(d) for d in diagnostics] == []
    resources = translate_proxy(build_proxy(policy, ProxyIdentity()))
    return {
        kind: {
            name: MessageToDict(m, preserving_proto_field_name=True)
            for name, m in resources.by_type[t].items()
        }
        for kind, t in (("clusters", CLUSTER), ("listeners", LISTENER), ("routes", ROUTE))
    }


def _routes(envoy: dict[str, dict[str, Any]], host: str) -> list[dict[str, Any]]:
    config = envoy["routes"][names.OUTBOUND_HTTP_ROUTE_CONFIG]
    (vhost,) = [v for v in config["virtual_hosts"] if host in v["domains"]]
    routes: list[dict[str, Any]] = vhost["routes"]
    return routes


def _cluster(envoy: dict[str, dict[str, Any]], host: str, port: int) -> dict[str, Any]:
    cluster: dict[str, Any] = envoy["clusters"][f"outbound|{port}||{host}"]
    return cluster


@pytest.mark.parametrize(
    ("host", "prefix", "attempts", "per_try", "timeout", "retry_on"),
    [
        ("maximus-core-service", "/api/v1", 3, "2s", "30s", "5xx,reset,connect-failure"),
        ("maximus-predict", "/predict", 2, "5s", "60s", None),
        ("maximus-oraculo", "/oraculo", 2, "3s", "30s", None),
        ("digital-thalamus", "/", 3, "2s", "10s", None),
        ("prefrontal-cortex", "/", 3, "2s", "10s", None),
        ("visual-cortex", "/", 3, "2s", "10s", None),
    ],
)
def test_routes_retries_and_timeouts(
    envoy: dict[str, dict[str, Any]],
    host: str,
    prefix: str,
    attempts: int,
    per_try: str,
    timeout: str,
    retry_on: str | None,
) -> None:
    route = _routes(envoy, host)[-1]
    assert route["match"] == {"prefix": prefix}
    action = route["route"]
    assert action["timeout"] == timeout
    assert action["retry_policy"]["num_retries"] == attempts
    assert action["retry_policy"]["per_try_timeout"] == per_try
    if retry_on is not None:
        assert action["retry_policy"]["retry_on"] == retry_on


@pytest.mark.parametrize("host", ["maximus-core-service", "maximus-predict", "maximus-oraculo"])
def test_chaos_fault_only_on_header(envoy: dict[str, dict[str, Any]], host: str) -> None:
    chaos, normal = _routes(envoy, host)
    assert chaos["match"]["headers"] == [{"name": "x-chaos-test", "string_match": {"exact": "true"}}]
    fault = chaos["typed_per_filter_config"][names.FAULT]
    assert fault["delay"] == {
        "fixed_delay": "5s",
        "percentage": {"numerator": 100000, "denominator": "MILLION"},
    }
    assert fault["abort"] == {
        "http_status": 503,
        "percentage": {"numerator": 50000, "denominator": "MILLION"},
    }
    assert "typed_per_filter_config" not in normal
    assert chaos["route"] == normal["route"]


@pytest.mark.parametrize(
    ("host", "port", "connections", "per_connection"),
    [
        ("maximus-core-service", 9101, 100, 2),
        ("maximus-oraculo", 9103, 100, 2),
        ("maximus-predict", 9102, 50, 1),
        ("digital-thalamus", 9201, 200, 10),
        ("redis", 6379, 1000, None),
    ],
)
def test_connection_pools(
    envoy: dict[str, dict[str, Any]], host: str, port: int, connections: int, per_connection: int | None
) -> None:
    cluster = _cluster(envoy, host, port)
    assert cluster["circuit_breakers"]["thresholds"][0]["max_connections"] == connections
    options = cluster.get("typed_extension_protocol_options", {}).get(names.HTTP_PROTOCOL_OPTIONS, {})
    assert (
        options.get("common_http_protocol_options", {}).get("max_requests_per_connection") == per_connection
    )


@pytest.mark.parametrize(
    ("host", "port", "lb"),
    [
        ("maximus-core-service", 9101, "LEAST_REQUEST"),
        ("maximus-oraculo", 9103, "LEAST_REQUEST"),
        ("prefrontal-cortex", 9202, "LEAST_REQUEST"),
        # ROUND_ROBIN is the enum's zero value: absent from JSON.
        ("maximus-predict", 9102, None),
        ("prometheus", 9090, None),
        ("grafana", 3000, None),
        ("jaeger", 16686, None),
        ("kafka", 9092, "RANDOM"),
        ("digital-thalamus", 9201, "RING_HASH"),
    ],
)
def test_load_balancing(envoy: dict[str, dict[str, Any]], host: str, port: int, lb: str | None) -> None:
    assert _cluster(envoy, host, port).get("lb_policy") == lb


def test_thalamus_hashes_on_session_id(envoy: dict[str, dict[str, Any]]) -> None:
    route = _routes(envoy, "digital-thalamus")[-1]
    assert route["route"]["hash_policy"] == [{"header": {"header_name": "x-session-id"}}]


@pytest.mark.parametrize(
    ("host", "port", "connections", "errors", "ejection", "percent"),
    [
        ("visual-cortex", 9203, 50, 2, "30s", 80),
        ("maximus-core-service", 9101, 100, 5, "30s", 50),
        ("maximus-oraculo", 9103, 100, 5, "30s", 50),
        ("maximus-predict", 9102, 50, 10, "60s", 30),
        ("maximus-batch", 9104, 200, 10, "60s", 30),
    ],
)
def test_outlier_levels(
    envoy: dict[str, dict[str, Any]],
    host: str,
    port: int,
    connections: int,
    errors: int,
    ejection: str,
    percent: int,
) -> None:
    cluster = _cluster(envoy, host, port)
    assert cluster["circuit_breakers"]["thresholds"][0]["max_connections"] == connections
    outlier = cluster["outlier_detection"]
    assert (outlier["consecutive_5xx"], outlier["base_ejection_time"], outlier["max_ejection_percent"]) == (
        errors,
        ejection,
        percent,
    )
    assert outlier["enforcing_consecutive_5xx"] == 100


def test_retry_budget(envoy: dict[str, dict[str, Any]]) -> None:
    thresholds = _cluster(envoy, "maximus-core-service", 9101)["circuit_breakers"]["thresholds"][0]
    assert thresholds["retry_budget"] == {"budget_percent": {"value": 20.0}, "min_retry_concurrency": 10}


def test_tcp_services_get_listeners_on_their_addresses(envoy: dict[str, dict[str, Any]]) -> None:
    assert {"127.0.0.20_6379", "127.0.0.21_9092", names.OUTBOUND_HTTP_LISTENER} <= set(envoy["listeners"])


def test_every_endpoint_is_local(envoy: dict[str, dict[str, Any]]) -> None:
    policy, _ = load_policy_dir(CONFIG)
    for se in policy.service_entries():
        # one instance per service on 127.0.0.1; the canary's other instances on loopback aliases
        expected = {"127.0.0.1", "127.0.0.2", "127.0.0.3"} if se.metadata.name == "maximus-reviews" else {
            "127.0.0.1"}
        assert {e.address for e in se.spec.endpoints} == expected


def test_reviews_canary_subsets_and_split(envoy: dict[str, dict[str, Any]]) -> None:
    for subset in ("v1", "v2"):
        cluster = envoy["clusters"][f"outbound|9110|{subset}|maximus-reviews"]
        assert cluster["outlier_detection"]["consecutive_5xx"] == 1, cluster
    hosts = envoy["routes"]["outbound_http"]["virtual_hosts"]
    [host] = [v for v in hosts if "maximus-reviews" in v["domains"]]
    header, split = host["routes"]
    assert header["match"]["headers"][0]["name"] == "x-canary"
    assert header["route"]["cluster"] == "outbound|9110|v2|maximus-reviews"
    weights = {c["name"]: c["weight"] for c in split["route"]["weighted_clusters"]["clusters"]}
    assert weights == {"outbound|9110|v1|maximus-reviews": 80, "outbound|9110|v2|maximus-reviews": 20}
