"""State-of-the-world ADS against the real server: subscriptions, ACK/NACK, stale nonces, the NACK memory."""

from __future__ import annotations

import pytest
from ads_client import make_node, names
from envoy.service.discovery.v3 import discovery_pb2
from envoy_config import LISTENER_NAME, ROUTE_NAME, clusters_only, mesh, route_config, static_cluster
from xds_harness import Harness, wait_until

from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE

pytestmark = pytest.mark.asyncio


def _types(registry_json: list[dict[str, object]], node_id: str = "proxy-1") -> dict[str, dict[str, object]]:
    [stream] = [s for s in registry_json if s["node"] == node_id]
    types = stream["types"]
    assert isinstance(types, dict)
    return types


async def test_wildcard_cds_and_lds_first_request_without_names_gets_all_resources(xds: Harness) -> None:
    xds.publish(mesh({"a": 8001, "b": 8002, "c": 8003}))
    client = xds.sotw()
    await client.request(CLUSTER)
    clusters = await client.recv_type(CLUSTER)
    assert names(clusters) == ["a", "b", "c"]
    await client.request(LISTENER)
    listeners = await client.recv_type(LISTENER)
    assert names(listeners) == [LISTENER_NAME]


async def test_named_eds_and_rds_get_only_the_requested_names(xds: Harness) -> None:
    resources = mesh({"a": 8001, "b": 8002, "c": 8003})
    resources.add(ROUTE, "other-routes", route_config("other-routes", ["c"]))
    xds.publish(resources)
    client = xds.sotw()
    await client.request(ENDPOINT, ["b"])
    endpoints = await client.recv_type(ENDPOINT)
    assert names(endpoints) == ["b"]
    await client.request(ROUTE, [ROUTE_NAME])
    routes = await client.recv_type(ROUTE)
    assert names(routes) == [ROUTE_NAME]


async def test_first_request_is_always_answered_even_for_an_empty_snapshot(xds: Harness) -> None:
    client = xds.sotw()
    await client.request(CLUSTER)
    clusters = await client.recv_type(CLUSTER)
    assert names(clusters) == []
    assert clusters.nonce
    await client.request(ENDPOINT, ["does-not-exist"])
    endpoints = await client.recv_type(ENDPOINT)
    assert names(endpoints) == []
    assert endpoints.nonce != clusters.nonce


async def test_first_request_is_always_answered_even_with_a_nonce_left_from_an_earlier_stream(
    xds: Harness,
) -> None:
    """A client that reconnects and repeats the nonce of its previous stream still gets an answer
    (Istio treats this as a reconnect; go-control-plane answers it because no response is outstanding)."""
    xds.publish(mesh({"a": 8001}))
    first = xds.sotw()
    await first.request(CLUSTER)
    old = await first.recv_type(CLUSTER)
    await first.close()
    second = xds.sotw()
    await second.request(CLUSTER, version=old.version_info, nonce=old.nonce)
    again = await second.recv_type(CLUSTER)
    assert names(again) == ["a"]


async def test_request_whose_names_changed_is_answered_even_when_versions_did_not(xds: Harness) -> None:
    xds.publish(mesh({"a": 8001, "b": 8002}))
    client = xds.sotw()
    await client.request(ENDPOINT, ["a"])
    first = await client.recv_type(ENDPOINT)
    # "ghost" does not exist: the selected resources, and so the version, stay the same
    await client.request(ENDPOINT, ["a", "ghost"], version=first.version_info, nonce=first.nonce)
    second = await client.recv_type(ENDPOINT)
    assert second.version_info == first.version_info
    assert second.nonce != first.nonce
    assert names(second) == ["a"]


async def test_ack_with_same_names_and_matching_nonce_gets_no_response(xds: Harness) -> None:
    xds.publish(mesh({"a": 8001}))
    client = xds.sotw()
    await client.request(CLUSTER)
    clusters = await client.recv_type(CLUSTER)
    await xds.ack(client, clusters)
    await client.request(ENDPOINT, ["a"])
    endpoints = await client.recv_type(ENDPOINT)
    await xds.ack(client, endpoints, ["a"])
    await client.expect_nothing()


async def test_stale_nonce_requests_are_ignored_without_response_or_state_change(xds: Harness) -> None:
    xds.publish(mesh({"a": 8001, "b": 8002}))
    client = xds.sotw()
    await client.request(ENDPOINT, ["a"])
    first = await client.recv_type(ENDPOINT)
    await xds.ack(client, first, ["a"])
    xds.publish(mesh({"a": 9001, "b": 8002}))
    second = await client.recv_type(ENDPOINT)
    assert second.version_info != first.version_info

    # a late request answering the first response: a names change, and a NACK; both stale
    await client.request(ENDPOINT, ["a", "b"], version=first.version_info, nonce=first.nonce)
    await client.request(ENDPOINT, ["a"], version=first.version_info, nonce=first.nonce, error="late")
    await client.expect_nothing()
    endpoints = _types(xds.registry.to_json())["endpoints"]
    assert endpoints["nack_error"] == ""
    assert endpoints["acked_version"] == first.version_info

    # the subscription is still ["a"]: an ACK of the current response naming ["a"] changes nothing
    await xds.ack(client, second, ["a"])
    await client.expect_nothing()
    endpoints = _types(xds.registry.to_json())["endpoints"]
    assert endpoints["acked_version"] == second.version_info
    assert endpoints["state"] == "SYNCED"


async def test_ack_and_nack_are_told_apart_by_nonce_and_error_detail(xds: Harness) -> None:
    xds.publish(clusters_only(static_cluster("a", 1000)))
    client = xds.sotw()
    await client.request(CLUSTER)
    first = await client.recv_type(CLUSTER)
    await xds.ack(client, first)
    await client.expect_nothing()
    clusters = _types(xds.registry.to_json())["clusters"]
    assert (clusters["state"], clusters["acked_version"]) == ("SYNCED", first.version_info)

    xds.publish(clusters_only(static_cluster("a", 2000)))
    second = await client.recv_type(CLUSTER)
    await xds.nack(client, second, "bad cluster", last_good=first.version_info)
    await client.expect_nothing()
    clusters = _types(xds.registry.to_json())["clusters"]
    assert clusters["state"] == "NACKED"
    assert clusters["nacked_version"] == second.version_info
    assert clusters["acked_version"] == first.version_info


async def test_nack_is_recorded_in_the_registry_with_the_error_text(xds: Harness) -> None:
    xds.publish(clusters_only(static_cluster("a", 1000)))
    client = xds.sotw(make_node("nacker"))
    await client.request(CLUSTER)
    first = await client.recv_type(CLUSTER)
    await xds.ack(client, first)
    xds.publish(clusters_only(static_cluster("a", 2000)))
    second = await client.recv_type(CLUSTER)
    error = "Proto constraint validation failed (ClusterValidationError.ConnectTimeout): value must be > 0"
    await xds.nack(client, second, error, last_good=first.version_info)
    await wait_until(lambda: _types(xds.registry.to_json(), "nacker")["clusters"]["nack_error"] != "",
                     what="the NACK to be recorded")
    [stream] = xds.registry.to_json()
    assert stream["node"] == "nacker"
    clusters = _types([stream], "nacker")["clusters"]
    assert clusters["state"] == "NACKED"
    assert clusters["nack_error"] == error
    assert clusters["nacked_version"] == second.version_info


async def test_nacked_version_is_never_re_sent_on_the_same_stream(xds: Harness) -> None:
    good, bad, fixed = (clusters_only(static_cluster("a", ms)) for ms in (1000, 2000, 3000))
    xds.publish(good)
    client = xds.sotw()
    await client.request(CLUSTER)
    first = await client.recv_type(CLUSTER)
    await xds.ack(client, first)
    xds.publish(bad)
    rejected = await client.recv_type(CLUSTER)
    await xds.nack(client, rejected, "rejected", last_good=first.version_info)
    await client.expect_nothing()

    # a snapshot with a different version is sent
    xds.publish(fixed)
    third = await client.recv_type(CLUSTER)
    assert third.version_info not in (first.version_info, rejected.version_info)
    await xds.ack(client, third)
    # changing back to the rejected content is not
    xds.publish(clusters_only(static_cluster("a", 2000)))
    await client.expect_nothing()
    # while other content still is
    xds.publish(good)
    back = await client.recv_type(CLUSTER)
    assert back.version_info == first.version_info


async def test_nacked_version_is_not_re_sent_to_a_reconnect_of_the_same_node_naming_its_version(
    xds: Harness,
) -> None:
    xds.publish(clusters_only(static_cluster("a", 1000)))
    client = xds.sotw(make_node("envoy-7"))
    await client.request(CLUSTER)
    first = await client.recv_type(CLUSTER)
    await xds.ack(client, first)
    xds.publish(clusters_only(static_cluster("a", 2000)))
    rejected = await client.recv_type(CLUSTER)
    await xds.nack(client, rejected, "rejected", last_good=first.version_info)
    await client.expect_nothing()
    await client.close()
    await wait_until(lambda: not xds.registry.streams, what="the stream to close")

    # Envoy reconnects and names the version it runs (the last one it accepted)
    again = xds.sotw(make_node("envoy-7"))
    await again.request(CLUSTER, version=first.version_info)
    received = await again.drain()
    assert rejected.version_info not in [r.version_info for r in received]

    # a proxy with another node id is not affected by envoy-7's NACK
    other = xds.sotw(make_node("envoy-8"))
    await other.request(CLUSTER, version=first.version_info)
    assert (await other.recv_type(CLUSTER)).version_info == rejected.version_info

    # the reconnected proxy gets the next change
    xds.publish(clusters_only(static_cluster("a", 3000)))
    third = await again.recv_type(CLUSTER)
    assert third.version_info not in (first.version_info, rejected.version_info)


async def test_inconsistent_snapshot_is_refused_and_the_last_good_one_kept(xds: Harness) -> None:
    xds.publish(mesh({"a": 8001}))
    client = xds.sotw()
    await client.request(CLUSTER)
    first = await client.recv_type(CLUSTER)
    await xds.ack(client, first)

    # an EDS cluster without its ClusterLoadAssignment
    no_endpoints = mesh({"a": 8001})
    del no_endpoints.by_type[ENDPOINT]["a"]
    assert xds.publish(no_endpoints) == 0
    # a listener whose RDS route configuration is missing
    no_routes = mesh({"a": 8001, "b": 8002})
    del no_routes.by_type[ROUTE][ROUTE_NAME]
    assert xds.publish(no_routes) == 0
    await client.expect_nothing()
    [(snapshot, streams)] = xds.cache.shapes().values()
    assert streams == 1
    assert sorted(snapshot.of_type(CLUSTER)) == ["a"]

    # a consistent change is still delivered
    assert xds.publish(mesh({"a": 8001, "b": 8002})) == 1
    assert names(await client.recv_type(CLUSTER)) == ["a", "b"]


async def test_per_type_cluster_discovery_service_stream_clusters(xds: Harness) -> None:
    xds.publish(mesh({"a": 8001, "b": 8002}))
    client = xds.sotw(service="cds")
    # the per-type services accept requests with or without type_url
    await client.send(discovery_pb2.DiscoveryRequest(node=make_node()))
    first = await client.recv_type(CLUSTER)
    assert names(first) == ["a", "b"]
    await xds.ack(client, first)
    # another type on the cluster service is ignored
    await client.request(LISTENER)
    await client.expect_nothing()
    xds.publish(mesh({"a": 8001}))
    assert names(await client.recv_type(CLUSTER)) == ["a"]

