"""Incremental (delta) ADS against the real server: initial versions, subscriptions, wildcard, removals,
make-before-break, per-resource versions, nonces and NACKs."""

from __future__ import annotations

import pytest
from ads_client import DeltaClient, make_node, messages, names, versions
from envoy_config import ROUTE_NAME, clusters_only, mesh, route_config, static_cluster
from xds_harness import Harness, wait_until

from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, Resources
from controlplane.xds.snapshot import content_hash

pytestmark = pytest.mark.asyncio


def _clusters(**timeouts: int) -> Resources:
    return clusters_only(*(static_cluster(name, ms) for name, ms in sorted(timeouts.items())))


def _delta_types(xds: Harness, node_id: str = "proxy-1") -> dict[str, dict[str, object]]:
    [stream] = [s for s in xds.registry.to_json() if s["node"] == node_id]
    types = stream["types"]
    assert isinstance(types, dict)
    return types


async def subscribe_all(xds: Harness, client: DeltaClient, eds: list[str]) -> None:
    """Subscribe like Envoy (CDS wildcard, EDS names, LDS wildcard, RDS names) and ACK every response."""
    for type_url, subscribe in ((CLUSTER, []), (ENDPOINT, eds), (LISTENER, []), (ROUTE, [ROUTE_NAME])):
        await client.request(type_url, subscribe=subscribe)
        await xds.ack(client, await client.recv_type(type_url))
    await client.expect_nothing()


async def test_delta_first_request_without_initial_versions_is_answered_even_for_an_empty_snapshot(
    xds: Harness,
) -> None:
    client = xds.delta()
    await client.request(CLUSTER)
    response = await client.recv_type(CLUSTER)
    assert list(response.resources) == []
    assert list(response.removed_resources) == []
    assert response.nonce


async def test_delta_initial_versions_matching_current_versions_get_an_empty_response(xds: Harness) -> None:
    """Nothing to send, but an (empty) response all the same: Envoy resets its retry backoff only when
    a message arrives (sent nothing, a reconnected delta proxy took up to 23 s to be back in sync)."""
    xds.publish(_clusters(a=1000, b=2000))
    first = xds.delta(make_node("envoy-1"))
    await first.request(CLUSTER)
    have = versions(await first.recv_type(CLUSTER))
    assert sorted(have) == ["a", "b"]
    await first.close()

    again = xds.delta(make_node("envoy-1"))
    await again.request(CLUSTER, initial_versions=have)
    empty = await again.recv_type(CLUSTER)
    assert (list(empty.resources), list(empty.removed_resources)) == ([], [])
    await xds.ack(again, empty)
    await again.expect_nothing()


async def test_delta_initial_versions_mismatching_get_only_those_resources(xds: Harness) -> None:
    xds.publish(_clusters(a=1000, b=2000, c=3000))
    probe = xds.delta(make_node("probe"))
    await probe.request(CLUSTER)
    current = versions(await probe.recv_type(CLUSTER))

    client = xds.delta(make_node("envoy-1"))
    await client.request(CLUSTER, initial_versions={"a": current["a"], "b": "old", "c": current["c"],
                                                    "gone": "v0"})
    response = await client.recv_type(CLUSTER)
    assert versions(response) == {"b": current["b"]}
    assert list(response.removed_resources) == ["gone"]
    await xds.ack(client, response)
    await client.expect_nothing()


async def test_delta_subscribe_and_unsubscribe_eds_names(xds: Harness) -> None:
    xds.publish(mesh({"a": 8001, "b": 8002, "c": 8003}))
    client = xds.delta()
    await client.request(ENDPOINT, subscribe=["a"])
    first = await client.recv_type(ENDPOINT)
    assert names(first) == ["a"]
    await xds.ack(client, first)
    await client.request(ENDPOINT, subscribe=["b"])
    second = await client.recv_type(ENDPOINT)
    assert names(second) == ["b"]
    await xds.ack(client, second)
    await client.request(ENDPOINT, unsubscribe=["a"])
    await client.expect_nothing()

    # every endpoint changes; only the one still subscribed is sent
    xds.publish(mesh({"a": 9001, "b": 9002, "c": 9003}))
    update = await client.recv_type(ENDPOINT)
    assert names(update) == ["b"]
    assert list(update.removed_resources) == []


async def test_delta_wildcard_via_star(xds: Harness) -> None:
    xds.publish(_clusters(a=1000, b=1000))
    client = xds.delta()
    await client.request(CLUSTER, subscribe=["*"])
    first = await client.recv_type(CLUSTER)
    assert sorted(names(first)) == ["a", "b"]
    await xds.ack(client, first)
    xds.publish(_clusters(a=1000, b=1000, c=1000))
    added = await client.recv_type(CLUSTER)
    assert names(added) == ["c"]


async def test_delta_legacy_wildcard_first_request_without_names(xds: Harness) -> None:
    xds.publish(_clusters(a=1000, b=1000))
    client = xds.delta()
    await client.request(CLUSTER)
    first = await client.recv_type(CLUSTER)
    assert sorted(names(first)) == ["a", "b"]
    await xds.ack(client, first)
    xds.publish(_clusters(a=1000, b=1000, c=1000))
    assert names(await client.recv_type(CLUSTER)) == ["c"]


async def test_delta_removed_resources_when_a_resource_disappears(xds: Harness) -> None:
    xds.publish(_clusters(a=1000, b=1000))
    client = xds.delta()
    await client.request(CLUSTER)
    await xds.ack(client, await client.recv_type(CLUSTER))
    xds.publish(_clusters(a=1000))
    removal = await client.recv_type(CLUSTER)
    assert list(removal.resources) == []
    assert list(removal.removed_resources) == ["b"]


async def test_delta_removed_resources_name_a_vanished_resource_only_once(xds: Harness) -> None:
    """RDS names: a route configuration that disappears is listed in removed_resources once, not again
    in later responses."""
    def routes(*extra: str, prefix: str = "a") -> Resources:
        resources = mesh({"a": 8001})
        for name in extra:
            resources.add(ROUTE, name, route_config(name, [prefix]))
        return resources

    xds.publish(routes("r1", "r2"))
    client = xds.delta()
    await client.request(ROUTE, subscribe=["r1", "r2"])
    first = await client.recv_type(ROUTE)
    assert sorted(names(first)) == ["r1", "r2"]
    await xds.ack(client, first)
    xds.publish(routes("r1"))
    removal = await client.recv_type(ROUTE)
    assert list(removal.removed_resources) == ["r2"]
    await xds.ack(client, removal)
    await client.expect_nothing()

    # r1 changes; the next response must not repeat the removal of r2
    resources = routes()
    resources.add(ROUTE, "r1", route_config("r1", ["a", "a"]))
    xds.publish(resources)
    update = await client.recv_type(ROUTE)
    assert names(update) == ["r1"]
    assert list(update.removed_resources) == []


async def test_delta_cluster_removal_is_deferred_until_listeners_and_routes_are_acked(
    xds: Harness,
) -> None:
    """Make-before-break: the cluster (and its endpoints) go only after the routes that no longer point at
    it are ACKed."""
    xds.publish(mesh({"a": 8001, "b": 8002}))
    client = xds.delta()
    await subscribe_all(xds, client, ["a", "b"])

    xds.publish(mesh({"a": 8001}))
    routes = await client.recv_type(ROUTE)
    assert "b" not in [r.route.cluster for r in messages(routes)[ROUTE_NAME].virtual_hosts[0].routes]
    await client.expect_nothing()  # no CDS/EDS removal while the new routes are not ACKed

    await xds.ack(client, routes)
    clusters = await client.recv_type(CLUSTER)
    assert list(clusters.removed_resources) == ["b"]
    assert list(clusters.resources) == []
    endpoints = await client.recv_type(ENDPOINT)
    assert list(endpoints.removed_resources) == ["b"]
    # (that b is not listed again after these are ACKed is test_delta_removed_resources_name_a_vanished_...)


async def test_delta_subscribed_name_that_does_not_exist_is_in_removed_resources_once(
    xds: Harness,
) -> None:
    xds.publish(mesh({"a": 8001}))
    client = xds.delta()
    await client.request(ENDPOINT, subscribe=["ghost"])
    first = await client.recv_type(ENDPOINT)
    assert list(first.resources) == []
    assert list(first.removed_resources) == ["ghost"]
    await xds.ack(client, first)
    await client.expect_nothing()

    await client.request(ENDPOINT, subscribe=["a"])
    second = await client.recv_type(ENDPOINT)
    assert names(second) == ["a"]
    assert list(second.removed_resources) == []
    await xds.ack(client, second)
    xds.publish(mesh({"a": 9001}))
    third = await client.recv_type(ENDPOINT)
    assert names(third) == ["a"]
    assert list(third.removed_resources) == []


async def test_delta_resource_versions_are_content_hashes_equal_across_servers(
    xds: Harness, xds2: Harness,
) -> None:
    resources = mesh({"a": 8001, "b": 8002})
    xds.publish(resources)
    xds2.publish(mesh({"b": 8002, "a": 8001}))
    seen = []
    for harness in (xds, xds2):
        client = harness.delta()
        await client.request(CLUSTER)
        seen.append(versions(await client.recv_type(CLUSTER)))
    assert seen[0] == seen[1]
    for name, message in resources.by_type[CLUSTER].items():
        value = message.SerializeToString(deterministic=True)
        expected = content_hash(CLUSTER.encode(), name.encode(), value)
        assert seen[0][name] == expected

    # changed content, changed version; unchanged resources keep theirs
    xds2.publish(mesh({"a": 8001, "b": 8002}, timeouts={"b": 4000}))
    other = xds2.delta(make_node("other", outbound_address="127.0.0.1:15300"))
    await other.request(CLUSTER)
    changed = versions(await other.recv_type(CLUSTER))
    assert changed["a"] == seen[0]["a"]
    assert changed["b"] != seen[0]["b"]


async def test_delta_nonces_are_unique(xds: Harness) -> None:
    xds.publish(_clusters(a=1000))
    one, two = xds.delta(make_node("n1")), xds.delta(make_node("n2"))
    nonces: list[str] = []
    for client in (one, two):
        await client.request(CLUSTER)
        response = await client.recv_type(CLUSTER)
        nonces.append(response.nonce)
        await xds.ack(client, response)
    for ms in (2000, 3000, 4000):
        xds.publish(_clusters(a=ms))
        for client in (one, two):
            response = await client.recv_type(CLUSTER)
            nonces.append(response.nonce)
            await xds.ack(client, response)
    assert len(nonces) == 8
    assert len(set(nonces)) == len(nonces), nonces


async def test_delta_nack_via_error_detail_is_recorded_with_its_text(xds: Harness) -> None:
    xds.publish(_clusters(a=1000))
    client = xds.delta()
    await client.request(CLUSTER)
    await xds.ack(client, await client.recv_type(CLUSTER))
    xds.publish(_clusters(a=2000))
    update = await client.recv_type(CLUSTER)
    await client.nack(update, "cluster a: bad timeout")
    await wait_until(lambda: _delta_types(xds)["clusters"]["nack_error"] != "", what="the NACK")
    clusters = _delta_types(xds)["clusters"]
    assert clusters["nack_error"] == "cluster a: bad timeout"
    assert clusters["state"] == "NACKED"


async def test_delta_nacked_resource_version_is_not_re_sent(xds: Harness) -> None:
    xds.publish(_clusters(a=1000, b=1000))
    client = xds.delta()
    await client.request(CLUSTER)
    await xds.ack(client, await client.recv_type(CLUSTER))

    xds.publish(_clusters(a=2000, b=1000))
    rejected = await client.recv_type(CLUSTER)
    rejected_a = versions(rejected)["a"]
    await client.nack(rejected, "a is bad")
    await client.expect_nothing()

    # b changes, a keeps its rejected version: only b is sent
    xds.publish(_clusters(a=2000, b=2000))
    update = await client.recv_type(CLUSTER)
    assert names(update) == ["b"]
    await xds.ack(client, update)

    # a fixed version of a is sent; changing back to the rejected one is not
    xds.publish(_clusters(a=3000, b=2000))
    fixed = await client.recv_type(CLUSTER)
    assert names(fixed) == ["a"]
    assert versions(fixed)["a"] != rejected_a
    await xds.ack(client, fixed)
    xds.publish(_clusters(a=2000, b=2000))
    await client.expect_nothing()


async def test_delta_updated_cluster_is_followed_by_its_load_assignment_even_if_unchanged(
    xds: Harness,
) -> None:
    xds.publish(mesh({"a": 8001, "b": 8002}))
    client = xds.delta()
    await client.request(CLUSTER)
    await xds.ack(client, await client.recv_type(CLUSTER))
    await client.request(ENDPOINT, subscribe=["a", "b"])
    before = await client.recv_type(ENDPOINT)
    await xds.ack(client, before)

    xds.publish(mesh({"a": 8001, "b": 8002}, timeouts={"a": 3000}))
    clusters = await client.recv_type(CLUSTER)
    assert names(clusters) == ["a"]
    endpoints = await client.recv_type(ENDPOINT)
    assert names(endpoints) == ["a"]
    assert versions(endpoints)["a"] == versions(before)["a"]


async def test_per_type_cluster_discovery_service_delta_clusters(xds: Harness) -> None:
    xds.publish(_clusters(a=1000, b=1000))
    client = xds.delta(service="cds")
    await client.request("")  # the per-type service knows its type
    first = await client.recv_type(CLUSTER)
    assert sorted(names(first)) == ["a", "b"]
    await xds.ack(client, first)
    await client.request(LISTENER)
    await client.expect_nothing()
    xds.publish(_clusters(a=1000))
    assert list((await client.recv_type(CLUSTER)).removed_resources) == ["b"]


async def test_delta_type_unchanged_while_its_ack_is_outstanding_becomes_synced(xds: Harness) -> None:
    """A snapshot that changes only routes arrives while the proxy has not ACKed clusters yet: once that
    ACK comes, clusters are SYNCED with the new snapshot (not left STALE until the next change)."""
    xds.publish(mesh({"a": 1}))
    client = xds.delta()
    await client.request(CLUSTER)
    clusters = await client.recv_type(CLUSTER)
    xds.publish(mesh({"a": 1}, routed=[]))  # same clusters, different routes
    await client.expect_nothing()  # nothing for clusters: the proxy's copy is current
    await xds.ack(client, clusters)
    await wait_until(lambda: _delta_types(xds)["clusters"]["state"] == "SYNCED",
                     what="clusters to be SYNCED with the new snapshot")
