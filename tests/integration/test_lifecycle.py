"""Server lifecycle: close() ends the open streams and frees their state; the server restarts on a new
port."""

from __future__ import annotations

import grpc
import pytest
from ads_client import make_node, names
from envoy_config import clusters_only, static_cluster
from xds_harness import Harness, wait_until

from controlplane.translate.resources import CLUSTER

pytestmark = pytest.mark.asyncio


async def test_close_ends_open_streams_and_the_server_restarts_on_a_new_port(xds: Harness) -> None:
    xds.publish(clusters_only(static_cluster("a")))
    sotw = xds.sotw(make_node("s"))
    delta = xds.delta(make_node("d"))
    await sotw.request(CLUSTER)
    first = await sotw.recv_type(CLUSTER)
    await delta.request(CLUSTER)
    await delta.recv_type(CLUSTER)
    old_port = xds.server.port

    await xds.server.close(grace=0.2)
    for client in (sotw, delta):
        # streams end cleanly (OK) rather than being cancelled after the grace period
        ended = await client.ended_with(timeout=5)
        assert ended.code == grpc.StatusCode.OK
    await wait_until(lambda: not xds.registry.streams, what="the streams' state to be freed")
    assert not xds.cache.shapes()

    # the same XdsServer starts again, listening on a new port (127.0.0.1:0)
    await xds.server.start()
    assert xds.server.port not in (0, old_port)
    again = xds.sotw(make_node("s"))
    await again.request(CLUSTER, version=first.version_info)
    response = await again.recv_type(CLUSTER)
    assert names(response) == ["a"]
    # equal config, equal version after the restart
    assert response.version_info == first.version_info
