"""A reconnect storm larger than grpc's default backlog of pending calls loses no stream.

grpc refuses new calls at random once more than 1,000 are waiting for the server to pick them up (3,000:
all of them). Every proxy of a mesh reconnects at once when the control plane restarts; at 2,000 scripted
streams a burst lost 4-7 % of them (CANCELLED, or INTERNAL on the client's first write). The server here
is stopped (SIGSTOP) while 1,500 streams open, as a busy server would be, then resumed: each stream must
get its first response.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.translate.resources import CLUSTER
from tests.harness import GiveUp, free_port, wait_until

STREAMS = 1_500
CHANNELS = 12
DELTA = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: storm}
spec:
  hosts: [storm.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
"""


async def _first_response(channel: grpc.aio.Channel, index: int) -> str:
    """"" once the stream got its first CDS response, else what went wrong."""
    call = channel.stream_stream(
        DELTA, request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString)()
    request = discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER)
    request.node.id = f"storm-{index}"
    request.node.cluster = "storm"
    try:
        await call.write(request)
        response = await asyncio.wait_for(call.read(), 60)
        if response is grpc.aio.EOF:
            return "the server ended the stream"
        return "" if response.type_url == CLUSTER else f"unexpected {response.type_url}"
    except (grpc.aio.AioRpcError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    finally:
        call.cancel()


async def _storm(xds: str, server: subprocess.Popen[bytes]) -> list[str]:
    channels = [grpc.aio.insecure_channel(xds, options=[("grpc.use_local_subchannel_pool", 1),
                                                         ("storm.channel", i)]) for i in range(CHANNELS)]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), 30)
        os.kill(server.pid, signal.SIGSTOP)  # a server too busy to pick up calls
        try:
            streams = [asyncio.create_task(_first_response(channels[i % CHANNELS], i))
                       for i in range(STREAMS)]
            await asyncio.sleep(1.5)  # every stream's headers and first request reach the server's socket
        finally:
            os.kill(server.pid, signal.SIGCONT)
        return await asyncio.gather(*streams)
    finally:
        await asyncio.gather(*(c.close() for c in channels))


@pytest.mark.timeout(180)
def test_a_storm_of_new_streams_past_the_pending_call_limit_loses_none(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "storm.yaml").write_text(SERVICE)
    xds, admin = f"127.0.0.1:{free_port()}", free_port()
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "controlplane", "--log-level", "WARNING", "serve", "--config", str(config),
             "--xds-address", xds, "--admin-address", f"127.0.0.1:{admin}", "--insecure-xds",
             "--ca-dir", str(tmp_path / "ca")],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        def ready() -> bool:
            if server.poll() is not None:
                raise GiveUp((tmp_path / "serve.log").read_text())
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1):
                return True

        wait_until(ready, timeout=30, what="controlplane serve ready")
        outcomes = asyncio.run(_storm(xds, server))
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGCONT)
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    failed = [o for o in outcomes if o]
    assert not failed, f"{len(failed)} of {STREAMS} streams failed, e.g. {failed[:3]}"
