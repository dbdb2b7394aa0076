"""Issue 3's traffic behaviours, proven with real traffic through real Envoy sidecars.

One control plane and two sidecars serve the whole module: `client` (delta xDS; the app's outbound HTTP
proxy every test sends through) and `server` (state of the world; it has an inbound listener for the `app`
upstream, for the inbound test). Each test writes its own policy into the watched directory (one file, saved
atomically), reloads, waits until both proxies ACKed every type of the new snapshot, and then sends
requests to small upstreams (tests/e2e/traffic_support.py) that report which instance answered and fail or
are slow on demand. Service hosts are named per test (`tNN-...`), so no cluster's state (outlier ejections,
health, stats) carries over from one test to the next. Request counts are bounded and statistical
tolerances are wide (a flake would need a many-sigma deviation).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.live_support import atomic_write
from tests.e2e.mesh import ControlPlane
from tests.e2e.traffic_support import (
    POLICY_FILE,
    Answer,
    BehaviourUpstream,
    Sidecar,
    TcpNameServer,
    TrafficMesh,
    can_bind,
    cluster,
    doc,
    endpoint,
    free_port_on,
    send_concurrently,
    service_entry,
    sni_hello,
    subsets,
    tcp_hello,
)
from tests.harness import ProcessGroup, free_port, wait_until

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
APP = "t18-app"  # the server sidecar's app (labels of its node)

Spawn = Callable[..., BehaviourUpstream]


@pytest.fixture(scope="module")
def tmesh(envoy_binary: str, module_processes: ProcessGroup,
          tmp_path_factory: pytest.TempPathFactory) -> Generator[TrafficMesh, None, None]:
    """The module's control plane, client sidecar and server sidecar (with its app upstream)."""
    work = tmp_path_factory.mktemp("traffic")
    config_dir = work / "config"
    atomic_write(config_dir / POLICY_FILE, "")
    app = BehaviourUpstream(APP)
    try:
        control_plane = ControlPlane(module_processes, config_dir)
        control_plane.start()
        client = Sidecar(envoy_binary, module_processes, work, "traffic-client", control_plane.xds_address)
        server = Sidecar(envoy_binary, module_processes, work, "traffic-server", control_plane.xds_address,
                         delta=False, inbound_port=free_port(), app_ports=(app.port,),
                         labels=f"app={APP},version=v1")
        client.start()
        server.start()
        mesh = TrafficMesh(control_plane, client, server, app, config_dir, [client, server])
        mesh.wait_synced(timeout=20)
        yield mesh
    finally:
        app.close()


@pytest.fixture
def spawn() -> Generator[Spawn, None, None]:
    """Start `BehaviourUpstream`s for one test; all are closed when it ends."""
    started: list[BehaviourUpstream] = []

    def start(name: str, host: str = "127.0.0.1", port: int = 0) -> BehaviourUpstream:
        upstream = BehaviourUpstream(name, host, port)
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        upstream.close()


def versions(spawn: Spawn, *names: str) -> dict[str, BehaviourUpstream]:
    """One upstream per version, named after it."""
    return {name: spawn(name) for name in names}


def versioned_endpoints(ups: dict[str, BehaviourUpstream]) -> list[dict[str, Any]]:
    return [endpoint(u, version=name) for name, u in ups.items()]


def route_all(host: str) -> dict[str, Any]:
    """A VirtualService sending every request of `host` to its own service."""
    http = [{"route": [{"destination": {"host": host}}]}]
    return doc("VirtualService", host, {"hosts": [host], "http": http})


def upstream_counts(answers: list[Answer]) -> Counter[str | None]:
    return Counter(a.upstream for a in answers)


# 1 header routing to a subset ---------------------------------------------------------------------------


def test_header_routes_to_subset(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """end-user: jason → subset v2 (DestinationRule subsets by version label); everyone else → v1."""
    host = "t01-reviews"
    ups = versions(spawn, "v1", "v2")
    tmesh.apply([
        service_entry(host, versioned_endpoints(ups)),
        doc("DestinationRule", host, {"host": host, "subsets": subsets("v1", "v2")}),
        doc("VirtualService", host, {"hosts": [host], "http": [
            {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
             "route": [{"destination": {"host": host, "subset": "v2"}}]},
            {"name": "rest", "route": [{"destination": {"host": host, "subset": "v1"}}]},
        ]}),
    ])
    c = tmesh.client
    for _ in range(5):
        assert c.send(host, "/", headers={"end-user": "jason"}).upstream == "v2"
        assert c.send(host, "/").upstream == "v1"
        assert c.send(host, "/", headers={"end-user": "jasonx"}).upstream == "v1"
    assert ups["v1"].count == 10 and ups["v2"].count == 5


# 2 weighted split ---------------------------------------------------------------------------------------


def test_weighted_split_80_20_and_weight_zero_never_answers(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """80/20 over 200 requests lands in 65-95% for v1; v3 (weight 0) gets nothing."""
    host = "t02-reviews"
    ups = versions(spawn, "v1", "v2", "v3")
    tmesh.apply([
        service_entry(host, versioned_endpoints(ups)),
        doc("DestinationRule", host, {"host": host, "subsets": subsets("v1", "v2", "v3")}),
        doc("VirtualService", host, {"hosts": [host], "http": [{"route": [
            {"destination": {"host": host, "subset": "v1"}, "weight": 80},
            {"destination": {"host": host, "subset": "v2"}, "weight": 20},
            {"destination": {"host": host, "subset": "v3"}, "weight": 0},
        ]}]}),
    ])
    answers = send_concurrently(tmesh.client.outbound_port, host, "/", 200, 4)
    counts = upstream_counts(answers)
    assert set(counts) <= {"v1", "v2"}, counts
    assert 130 <= counts["v1"] <= 190, counts
    assert counts["v1"] + counts["v2"] == 200, counts
    assert ups["v3"].count == 0


# 3 fault abort ------------------------------------------------------------------------------------------


def test_fault_abort_fraction_under_header_match(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """x-fault: abort → 503 from the fault filter about half the time; other requests never aborted."""
    host = "t03-ratings"
    up = spawn("v1")
    tmesh.apply([
        service_entry(host, [endpoint(up)]),
        doc("VirtualService", host, {"hosts": [host], "http": [
            {"name": "faulty", "match": [{"headers": {"x-fault": {"exact": "abort"}}}],
             "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 50}}},
             "route": [{"destination": {"host": host}}]},
            {"name": "rest", "route": [{"destination": {"host": host}}]},
        ]}),
    ])
    port = tmesh.client.outbound_port
    faulty = send_concurrently(port, host, "/", 80, 4, headers={"x-fault": "abort"})
    aborted = [a for a in faulty if a.status == 503]
    assert all(a.upstream is None and b"fault filter abort" in a.body for a in aborted), aborted[:3]
    assert all(a.status == 200 and a.upstream == "v1" for a in faulty if a.status != 503)
    assert 15 <= len(aborted) <= 65, Counter(a.status for a in faulty)
    # aborted requests never reached the upstream (no retry of a fault-filter abort either)
    assert up.count == 80 - len(aborted)
    clean = send_concurrently(port, host, "/", 40, 4)
    assert Counter(a.status for a in clean) == {200: 40}


# 4 fault delay ------------------------------------------------------------------------------------------


def test_fault_delay_for_matched_requests_only(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """A 1s fixed delay (100%) on /slow; /fast on the same host is not delayed."""
    host = "t04-ratings"
    up = spawn("v1")
    tmesh.apply([
        service_entry(host, [endpoint(up)]),
        doc("VirtualService", host, {"hosts": [host], "http": [
            {"name": "slow", "match": [{"uri": {"prefix": "/slow"}}],
             "fault": {"delay": {"fixedDelay": "1s", "percentage": {"value": 100}}},
             "route": [{"destination": {"host": host}}]},
            {"name": "rest", "route": [{"destination": {"host": host}}]},
        ]}),
    ])
    port = tmesh.client.outbound_port
    slow = send_concurrently(port, host, "/slow", 3, 3)
    assert all(a.status == 200 and a.upstream == "v1" for a in slow), slow
    assert all(0.95 <= a.elapsed < 3.0 for a in slow), [a.elapsed for a in slow]
    fast = send_concurrently(port, host, "/fast", 10, 2)
    assert all(a.status == 200 and a.elapsed < 0.5 for a in fast), [(a.status, a.elapsed) for a in fast]


# 5 route timeout ----------------------------------------------------------------------------------------


def test_route_timeout_gives_504_at_the_configured_time(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """timeout: 500ms with an upstream that takes 2s → 504 after ≈0.5s; a fast request is unaffected."""
    host = "t05-slow"
    up = spawn("v1")
    tmesh.apply([
        service_entry(host, [endpoint(up)]),
        doc("VirtualService", host, {"hosts": [host], "http": [
            {"timeout": "500ms", "route": [{"destination": {"host": host}}]},
        ]}),
    ])
    answer = tmesh.client.send(host, "/", headers={"x-delay-ms": "2000"})
    assert answer.status == 504, answer
    assert b"upstream request timeout" in answer.body
    assert 0.45 <= answer.elapsed < 1.5, answer.elapsed
    assert tmesh.client.send(host, "/").status == 200


# 6 retries ----------------------------------------------------------------------------------------------


def _retry_service(tmesh: TrafficMesh, host: str, up: BehaviourUpstream,
                   routes: list[dict[str, Any]]) -> None:
    tmesh.apply([
        service_entry(host, [endpoint(up)]),
        doc("VirtualService", host, {"hosts": [host], "http": routes}),
    ])


def test_retries_turn_transient_failures_into_success(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """attempts 3 on 5xx, an upstream failing its first 2 requests → 200, and the upstream saw 3."""
    host = "t06-retry"
    up = spawn("v1")
    _retry_service(tmesh, host, up, [
        {"retries": {"attempts": 3, "retryOn": "5xx"}, "route": [{"destination": {"host": host}}]},
    ])
    up.fail_first, up.fail_status = 2, 500
    answer = tmesh.client.send(host, "/")
    assert answer.status == 200 and answer.upstream == "v1", answer
    assert up.count == 3


def test_per_try_timeout_lets_a_later_try_win(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """perTryTimeout 300ms, the first try takes 2s → the second try answers, well before 2s."""
    host = "t06-pertry"
    up = spawn("v1")
    _retry_service(tmesh, host, up, [
        {"timeout": "5s", "retries": {"attempts": 2, "perTryTimeout": "300ms", "retryOn": "5xx"},
         "route": [{"destination": {"host": host}}]},
    ])
    up.delay_first, up.delay = 1, 2.0
    answer = tmesh.client.send(host, "/")
    assert answer.status == 200 and answer.upstream == "v1", answer
    assert 0.28 <= answer.elapsed < 1.5, answer.elapsed
    assert up.count == 2


def test_attempts_zero_returns_the_first_failure(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """attempts: 0 means no retry policy at all, not even Istio's default retry on 503."""
    host = "t06-noretry"
    up = spawn("v1")
    _retry_service(tmesh, host, up, [
        {"retries": {"attempts": 0}, "route": [{"destination": {"host": host}}]},
    ])
    up.fail_first, up.fail_status = 1, 503
    answer = tmesh.client.send(host, "/")
    assert answer.status == 503 and answer.upstream == "v1", answer
    assert up.count == 1


# 7 default retry policy ---------------------------------------------------------------------------------


def test_default_retry_policy_retries_a_503(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """No `retries`: Istio's default (2 retries on 503, ...) turns one 503 into a 200; a 500 is not
    retried (only 503 is a retriable status by default)."""
    host = "t07-default"
    up = spawn("v1")
    _retry_service(tmesh, host, up, [{"route": [{"destination": {"host": host}}]}])
    up.fail_first, up.fail_status = 1, 503
    answer = tmesh.client.send(host, "/")
    assert answer.status == 200 and answer.upstream == "v1", answer
    assert up.count == 2
    answer = tmesh.client.send(host, "/", headers={"x-status": "500"})
    assert answer.status == 500 and up.count == 3


# 8 outlier detection ------------------------------------------------------------------------------------


def test_outlier_detection_ejects_the_failing_endpoint(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """consecutive5xxErrors 1: the always-500 endpoint is ejected after its first failure; then every
    request succeeds and ejections_active is 1."""
    host = "t08-outlier"
    good, bad = spawn("good"), spawn("bad")
    bad.always_status = 500
    tmesh.apply([
        service_entry(host, [endpoint(good), endpoint(bad)]),
        doc("DestinationRule", host, {"host": host, "trafficPolicy": {
            "loadBalancer": {"simple": "ROUND_ROBIN"},
            "outlierDetection": {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "30s",
                                 "maxEjectionPercent": 100}}}),
        route_all(host),
    ])
    c = tmesh.client
    name = cluster(host)
    early = [c.send(host, "/") for _ in range(6)]
    assert bad.count >= 1, early  # round robin reached it
    assert bad.count <= 2, early  # ejected right after its (first) failure
    wait_until(lambda: c.cluster_stat(name, "outlier_detection.ejections_active") == 1, timeout=5,
               what="one active ejection")
    answers = [c.send(host, "/") for _ in range(20)]
    assert all(a.status == 200 and a.upstream == "good" for a in answers), upstream_counts(answers)
    assert c.cluster_stat(name, "outlier_detection.ejections_active") == 1
    assert c.cluster_stat(name, "outlier_detection.ejections_enforced_consecutive_5xx") >= 1


# 9 connection-pool overflow -----------------------------------------------------------------------------


def test_connection_pool_overflow_gives_503(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """maxConnections 1, http1MaxPendingRequests 1, maxRequestsPerConnection 1 and a slow upstream:
    6 concurrent requests → one served, one waits, the rest overflow with 503 (x-envoy-overloaded)."""
    host = "t09-pool"
    up = spawn("v1")
    tmesh.apply([
        service_entry(host, [endpoint(up)]),
        doc("DestinationRule", host, {"host": host, "trafficPolicy": {"connectionPool": {
            "tcp": {"maxConnections": 1},
            "http": {"http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1}}}}),
        route_all(host),
    ])
    answers = send_concurrently(tmesh.client.outbound_port, host, "/", 6, 6,
                                headers={"x-delay-ms": "800"})
    statuses = Counter(a.status for a in answers)
    assert statuses[503] >= 1 and statuses[200] >= 1, statuses
    assert set(statuses) == {200, 503}, statuses
    overflowed = [a for a in answers if a.status == 503]
    assert all(a.upstream is None and a.headers.get("x-envoy-overloaded") == "true" for a in overflowed)
    assert tmesh.client.cluster_stat(cluster(host), "upstream_rq_pending_overflow") >= 1
    assert up.count == statuses[200]


# 10 consistent hash -------------------------------------------------------------------------------------


def test_consistent_hash_keeps_a_session_on_one_instance(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """consistentHash on x-session-id over 3 endpoints: a session always lands on the same instance;
    different sessions spread over more than one."""
    host = "t10-sessions"
    ups = [spawn(f"i{n}") for n in range(3)]
    tmesh.apply([
        service_entry(host, [endpoint(u) for u in ups]),
        doc("DestinationRule", host, {"host": host, "trafficPolicy": {
            "loadBalancer": {"consistentHash": {"httpHeaderName": "x-session-id"}}}}),
        route_all(host),
    ])
    where: dict[str, set[str | None]] = {}
    for session in range(16):
        for _ in range(4):
            answer = tmesh.client.send(host, "/", headers={"x-session-id": f"session-{session}"})
            assert answer.status == 200, answer
            where.setdefault(f"session-{session}", set()).add(answer.upstream)
    assert all(len(instances) == 1 for instances in where.values()), where
    assert len(set().union(*where.values())) >= 2, where


# 11 active health checking ------------------------------------------------------------------------------


def test_workload_group_probe_takes_unhealthy_endpoint_out(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """3 WorkloadEntries on 3 loopback addresses (one port) and a WorkloadGroup probe (httpGet /healthz,
    periodSeconds 1, failureThreshold 1): once one endpoint fails /healthz it gets no traffic."""
    host = "t11-vision"
    addresses = [f"127.0.0.{n}" for n in (31, 32, 33)]
    if not all(can_bind(a) for a in addresses):
        pytest.skip(f"cannot bind the loopback aliases {addresses} here")
    port = free_port_on(addresses)
    ups = [spawn(f"w{n}", address, port) for n, address in enumerate(addresses)]
    entries = [doc("WorkloadEntry", f"{host}-{n}", {"address": u.host, "labels": {"app": host}})
               for n, u in enumerate(ups)]
    tmesh.apply([
        doc("ServiceEntry", host, {"hosts": [host], "location": "MESH_INTERNAL", "resolution": "STATIC",
                                   "ports": [{"number": port, "name": "http", "protocol": "HTTP"}],
                                   "workloadSelector": {"labels": {"app": host}}}),
        *entries,
        doc("WorkloadGroup", host, {"metadata": {"labels": {"app": host}}, "probe": {
            "periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 1, "successThreshold": 1,
            "httpGet": {"path": "/healthz", "port": port}}}),
        doc("DestinationRule", host, {"host": host,
                                      "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}),
    ])
    c = tmesh.client
    name = cluster(host, port)
    wait_until(lambda: all(u.health_checks > 0 for u in ups), timeout=5, what="every endpoint probed")
    first = upstream_counts([c.send(host, "/") for _ in range(12)])
    assert set(first) == {"w0", "w1", "w2"}, first
    ups[1].healthy = False
    started = time.monotonic()
    wait_until(lambda: c.cluster_stat(name, "membership_healthy") == 2, timeout=6,
               what="the failing endpoint to be marked unhealthy",
               describe=lambda: str({k: v for k, v in c.stats().items() if k.startswith(f"cluster.{name}.")}))
    assert time.monotonic() - started < 4.0
    before = ups[1].count
    later = upstream_counts([c.send(host, "/") for _ in range(20)])
    assert set(later) == {"w0", "w2"}, later
    assert ups[1].count == before


# 12 CORS ------------------------------------------------------------------------------------------------


def test_cors_preflight_allowed_and_refused_origin(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """A preflight from an allowed origin is answered by Envoy with the CORS headers; one from another
    origin gets no access-control-allow-origin."""
    host = "t12-cors"
    up = spawn("v1")
    tmesh.apply([
        service_entry(host, [endpoint(up)]),
        doc("VirtualService", host, {"hosts": [host], "http": [{
            "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}],
                           "allowMethods": ["GET", "POST"], "allowHeaders": ["x-custom"],
                           "maxAge": "24h", "allowCredentials": True},
            "route": [{"destination": {"host": host}}]}]}),
    ])
    c = tmesh.client
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-custom"}
    ok = c.send(host, "/cors", method="OPTIONS", headers={"Origin": "https://example.com", **preflight})
    assert ok.status == 200, ok
    assert ok.headers.get("access-control-allow-origin") == "https://example.com", ok.headers
    assert "POST" in ok.headers.get("access-control-allow-methods", ""), ok.headers
    assert ok.headers.get("access-control-allow-headers") == "x-custom", ok.headers
    assert ok.headers.get("access-control-max-age") == "86400", ok.headers
    assert ok.headers.get("access-control-allow-credentials") == "true", ok.headers
    assert up.count == 0  # the preflight was answered by Envoy
    refused = c.send(host, "/cors", method="OPTIONS", headers={"Origin": "https://evil.test", **preflight})
    assert "access-control-allow-origin" not in refused.headers, refused.headers
    simple = c.send(host, "/cors", headers={"Origin": "https://example.com"})
    assert simple.status == 200 and simple.upstream == "v1"
    assert simple.headers.get("access-control-allow-origin") == "https://example.com"


# 13 mirroring -------------------------------------------------------------------------------------------


def test_mirror_sends_a_copy_of_every_request_to_v3(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """mirror v3 (100%): v3 sees every request (Host with -shadow), the client only v1's answers."""
    host = "t13-mirror"
    ups = versions(spawn, "v1", "v3")
    tmesh.apply([
        service_entry(host, versioned_endpoints(ups)),
        doc("DestinationRule", host, {"host": host, "subsets": subsets("v1", "v3")}),
        doc("VirtualService", host, {"hosts": [host], "http": [{
            "mirror": {"host": host, "subset": "v3"}, "mirrorPercentage": {"value": 100},
            "route": [{"destination": {"host": host, "subset": "v1"}}]}]}),
    ])
    answers = [tmesh.client.send(host, f"/m/{n}") for n in range(20)]
    assert all(a.status == 200 and a.upstream == "v1" for a in answers), upstream_counts(answers)
    wait_until(lambda: ups["v3"].count == 20, timeout=5, what="v3 to see all 20 mirrored requests",
               describe=lambda: repr(ups["v3"]))
    assert ups["v1"].count == 20
    assert sorted(s.path for s in ups["v3"].seen) == sorted(f"/m/{n}" for n in range(20))
    assert all(s.headers["host"].startswith(f"{host}-shadow") for s in ups["v3"].seen), ups["v3"].seen[0]


def vip_or_skip() -> tuple[str, int]:
    """A loopback alias (127.0.0.100-249) and a port free on it, for a ServiceEntry VIP listener."""
    vip = f"127.0.0.{random.randrange(100, 250)}"
    if not can_bind(vip):
        pytest.skip(f"cannot bind the loopback alias {vip} (the VIP listener) in this sandbox")
    return vip, free_port(vip)


# 14 TCP weighted route ----------------------------------------------------------------------------------


def test_tcp_weighted_route_via_service_vip(tmesh: TrafficMesh) -> None:
    """A TCP ServiceEntry with a VIP (loopback alias): its listener splits connections 90/10."""
    host = "t14-redis"
    vip, port = vip_or_skip()
    primary, replica = TcpNameServer("primary"), TcpNameServer("replica")
    try:
        tmesh.apply([
            service_entry(host, [endpoint(primary, "tcp", role="primary"),
                                 endpoint(replica, "tcp", role="replica")],
                          port=port, protocol="TCP", port_name="tcp", addresses=[vip]),
            doc("DestinationRule", host, {"host": host, "subsets": [
                {"name": "primary", "labels": {"role": "primary"}},
                {"name": "replica", "labels": {"role": "replica"}}]}),
            doc("VirtualService", host, {"hosts": [host], "tcp": [{"route": [
                {"destination": {"host": host, "subset": "primary"}, "weight": 90},
                {"destination": {"host": host, "subset": "replica"}, "weight": 10}]}]}),
        ])
        wait_until(lambda: tcp_hello(vip, port) in ("primary", "replica"), timeout=5,
                   what=f"the VIP listener {vip}:{port}")
        counts = Counter(tcp_hello(vip, port) for _ in range(150))
        assert set(counts) == {"primary", "replica"}, counts
        assert 120 <= counts["primary"] <= 148, counts
    finally:
        primary.close()
        replica.close()


# 15 TLS routes by SNI -----------------------------------------------------------------------------------


def test_tls_routes_by_sni(tmesh: TrafficMesh) -> None:
    """A TLS ServiceEntry with two hosts on one VIP: `tls` routes pick the backend by the ClientHello's
    SNI (tls_inspector; TLS is not terminated); an SNI no route names gets no backend."""
    host_a, host_b = "a.t15-secure.test", "b.t15-secure.test"
    vip, port = vip_or_skip()
    backend_a, backend_b = TcpNameServer("backend-a"), TcpNameServer("backend-b")
    try:
        b_service = service_entry("t15-b-backend", [endpoint(backend_b, "tls")], port=port, protocol="TLS",
                                  port_name="tls")
        secure = doc("ServiceEntry", "t15-secure", {
            "hosts": [host_a, host_b], "addresses": [vip], "location": "MESH_INTERNAL",
            "resolution": "STATIC", "ports": [{"number": port, "name": "tls", "protocol": "TLS"}],
            "endpoints": [endpoint(backend_a, "tls")]})
        tmesh.apply([
            secure, b_service,
            doc("VirtualService", "t15-secure", {"hosts": [host_a, host_b], "tls": [
                {"match": [{"sniHosts": [host_a]}], "route": [{"destination": {"host": host_a}}]},
                {"match": [{"sniHosts": [host_b]}], "route": [{"destination": {"host": "t15-b-backend"}}]},
            ]}),
        ])
        wait_until(lambda: sni_hello(vip, port, host_a) == "backend-a", timeout=5,
                   what=f"the VIP listener {vip}:{port} to route {host_a}")
        for _ in range(5):
            assert sni_hello(vip, port, host_a) == "backend-a"
            assert sni_hello(vip, port, host_b) == "backend-b"
        with contextlib.suppress(OSError):
            assert sni_hello(vip, port, "c.t15-secure.test") == ""
    finally:
        backend_a.close()
        backend_b.close()


# 16 REGISTRY_ONLY ---------------------------------------------------------------------------------------


def test_registry_only_refuses_unknown_hosts(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """MeshConfig outboundTrafficPolicy REGISTRY_ONLY: an unknown host gets 502; registered ones work."""
    host = "t16-known"
    up = spawn("v1")
    tmesh.apply([
        doc("MeshConfig", "mesh", {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}},
            api="controlplane.io/v1alpha1"),
        service_entry(host, [endpoint(up)]),
    ])
    c = tmesh.client
    unknown = c.send("unknown.example.test", "/")
    assert unknown.status == 502 and unknown.upstream is None, unknown
    assert c.send(f"127.0.0.1:{up.port}", "/").status == 502  # not even a literal address gets out
    known = c.send(host, "/")
    assert known.status == 200 and known.upstream == "v1", known


# 17 Kubernetes-style domains ----------------------------------------------------------------------------


def test_kubernetes_style_domains_route_like_the_short_name(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """`ratings` in namespace default answers as ratings, ratings.default, ratings.default.svc,
    ratings.default.svc.cluster.local, each with and without its port; a VirtualService on the short
    name applies to all of them."""
    host = "t17-ratings"
    ups = versions(spawn, "v1", "v2")
    tmesh.apply([
        service_entry(host, versioned_endpoints(ups), port=9080),
        doc("DestinationRule", host, {"host": host, "subsets": subsets("v1", "v2")}),
        doc("VirtualService", host, {"hosts": [host], "http": [
            {"route": [{"destination": {"host": host, "subset": "v2"}}]}]}),
    ])
    names = [host, f"{host}.default", f"{host}.default.svc", f"{host}.default.svc.cluster.local"]
    for name in names:
        for authority in (name, f"{name}:9080"):
            answer = tmesh.client.send(authority, "/")
            assert answer.status == 200 and answer.upstream == "v2", (authority, answer)
    assert tmesh.client.send(f"{host}.other", "/").upstream is None


# 18 inbound listener ------------------------------------------------------------------------------------


def test_inbound_listener_forwards_to_the_local_app(tmesh: TrafficMesh) -> None:
    """client sidecar → server sidecar's inbound listener → its app: the ServiceEntry endpoint is the
    server sidecar's inbound address, and the server's inbound|<app port>|| cluster counts the requests."""
    server = tmesh.server
    assert server.inbound_port is not None
    tmesh.apply([
        service_entry(APP, [{"address": "127.0.0.1", "ports": {"http": server.inbound_port}}]),
    ])
    inbound = f"inbound|{tmesh.app.port}||"
    before_stat = server.cluster_stat(inbound, "upstream_rq_total")
    before_app = tmesh.app.count
    answers = [tmesh.client.send(APP, f"/in/{n}") for n in range(5)]
    assert all(a.status == 200 and a.upstream == APP for a in answers), answers
    assert tmesh.app.count - before_app == 5
    assert [s.path for s in tmesh.app.seen[-5:]] == [f"/in/{n}" for n in range(5)]
    assert server.cluster_stat(inbound, "upstream_rq_total") - before_stat == 5
    assert server.cluster_stat(inbound, "upstream_rq_200") >= 5


# 19 the seed's chaos rule -------------------------------------------------------------------------------


def seed_core_service() -> dict[str, Any]:
    """The seed mesh's maximus-core-service VirtualService (config/routes.yaml), as written."""
    for document in yaml.safe_load_all((REPO / "config" / "routes.yaml").read_text()):
        if document and document["kind"] == "VirtualService" \
                and document["metadata"]["name"] == "maximus-core-service":
            return dict(document)
    raise AssertionError("config/routes.yaml has no maximus-core-service VirtualService")


def test_seed_chaos_rule_only_touches_marked_requests(tmesh: TrafficMesh, spawn: Spawn) -> None:
    """The seed's chaos entry (x-chaos-test: true → delay + 503 abort), with 600ms / 50% / 50% instead of
    5s / 10% / 5% to keep the request count small: marked requests see some 503s and some delays;
    unmarked requests none."""
    vs = seed_core_service()
    chaos = vs["spec"]["http"][0]
    assert chaos["name"] == "chaos"
    assert chaos["match"][0]["headers"] == {"x-chaos-test": {"exact": "true"}}
    assert chaos["fault"]["delay"]["fixedDelay"] == "5s" and chaos["fault"]["abort"]["httpStatus"] == 503
    chaos["fault"]["delay"] = {"fixedDelay": "600ms", "percentage": {"value": 50}}
    chaos["fault"]["abort"]["percentage"] = {"value": 50}
    host = vs["spec"]["hosts"][0]
    up = spawn("core")
    tmesh.apply([service_entry(host, [endpoint(up)], port=9101), vs])
    port = tmesh.client.outbound_port
    marked = send_concurrently(port, host, "/api/v1/x", 40, 20, headers={"x-chaos-test": "true"})
    aborted = [a for a in marked if a.status == 503]
    delayed = [a for a in marked if a.elapsed >= 0.58]
    assert 5 <= len(aborted) <= 35, Counter(a.status for a in marked)
    assert all(a.upstream is None for a in aborted)
    assert len(delayed) >= 5, sorted(round(a.elapsed, 2) for a in marked)
    assert all(a.status == 200 for a in marked if a.status != 503)
    plain = send_concurrently(port, host, "/api/v1/x", 30, 6, headers={"x-chaos-test": "false"})
    assert all(a.status == 200 and a.upstream == "core" for a in plain), Counter(a.status for a in plain)
    assert max(a.elapsed for a in plain) < 0.5, sorted(round(a.elapsed, 2) for a in plain)
