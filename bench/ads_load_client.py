"""Scripted ADS load client: K concurrent xDS streams over a few gRPC channels, each like a fresh Envoy.

Every stream has its own node id and (by default) identical node metadata, so the control plane serves
them all from one snapshot; `--distinct-metadata` gives each stream its own `outbound_address`, i.e. its
own proxy shape and snapshot; `--distinct-identity` gives each stream what distinct sidecars of a real
mesh have: its own labels, inbound address (and app port) and service account.

SotW (default): a stream sends wildcard CDS and LDS requests, ACKs every response, and once it has the
clusters (listeners) requests EDS (RDS) for the names they reference. Delta (`--delta`): the same over
DeltaAggregatedResources (legacy wildcard CDS/LDS, then EDS/RDS subscriptions). A stream is *synced* when
it has received and ACKed a response of all four types; its ACK is written before it counts as synced.

The clock starts once every channel is connected, right before the first request, and stops when the
last stream is synced. Prints one JSON line on stdout, then keeps the streams open until stdin reaches
end-of-file (so the server can be measured with all streams connected), then closes them. While held,
stdin takes commands, one a line: `mark` (answered `ADS_LOAD_MARKED`) notes the responses seen so far;
`wait T TIMEOUT` waits until every stream has received and ACKed a Route response after the mark and
prints `ADS_LOAD_EDIT {json}` with each stream's latency from T (wall clock, `time.time()`, so another
process on the machine, e.g. the one that edited a policy file at T, can give it).

Names a stream learns are decoded once per (type, version) and shared by all streams: the client must
not be the bottleneck of a server benchmark (a real Envoy decodes everything; that cost is the proxy's).
Bytes received are counted exactly: responses are read as raw message bytes and parsed afterwards.

    .venv/bin/python bench/ads_load_client.py --target 127.0.0.1:18000 --streams 100
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ALL_TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
# a response of the key type tells which names of the value type to request
DEPENDENT = {CLUSTER: ENDPOINT, LISTENER: ROUTE}
HCM_TYPE = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
SOTW_METHOD = ADS + "StreamAggregatedResources"
DELTA_METHOD = ADS + "DeltaAggregatedResources"

RESULT_PREFIX = "ADS_LOAD_RESULT "
MARKED_LINE = "ADS_LOAD_MARKED"
EDIT_PREFIX = "ADS_LOAD_EDIT "


def eds_names(payloads: Iterable[bytes]) -> tuple[str, ...]:
    """EDS service names referenced by serialized Clusters."""
    names = set()
    for value in payloads:
        cluster = cluster_pb2.Cluster.FromString(value)
        if cluster.type == cluster_pb2.Cluster.EDS:
            names.add(cluster.eds_cluster_config.service_name or cluster.name)
    return tuple(sorted(names))


def rds_names(payloads: Iterable[bytes]) -> tuple[str, ...]:
    """RDS route configuration names referenced by serialized Listeners."""
    names = set()
    for value in payloads:
        listener = listener_pb2.Listener.FromString(value)
        chains = [*listener.filter_chains]
        if listener.HasField("default_filter_chain"):
            chains.append(listener.default_filter_chain)
        for chain in chains:
            for network_filter in chain.filters:
                if network_filter.typed_config.type_url == HCM_TYPE:
                    hcm = hcm_pb2.HttpConnectionManager.FromString(network_filter.typed_config.value)
                    if hcm.HasField("rds"):
                        names.add(hcm.rds.route_config_name)
    return tuple(sorted(names))


LEARN: dict[str, Callable[[Iterable[bytes]], tuple[str, ...]]] = {CLUSTER: eds_names, LISTENER: rds_names}


def _sotw_payloads(response: discovery_pb2.DiscoveryResponse) -> Iterable[bytes]:
    return (resource.value for resource in response.resources)


class NameCache:
    """Names learned from a response, decoded once per content key and shared by all streams: per SotW
    response version, and per delta resource (name, version), since distinct sidecars' responses differ
    in their own few resources and would otherwise each be decoded whole."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str, int], tuple[str, ...]] = {}
        self._per_resource: dict[tuple[str, str, str], tuple[str, ...]] = {}
        self.decoded = 0

    def delta_names(self, type_url: str, response: discovery_pb2.DeltaDiscoveryResponse) -> tuple[str, ...]:
        learn = LEARN[type_url]
        known = self._per_resource
        learned: set[str] = set()
        for resource in response.resources:
            key = (type_url, resource.name, resource.version)
            found = known.get(key)
            if found is None:
                found = known[key] = learn((resource.resource.value,))
                self.decoded += 1
            learned.update(found)
        return tuple(sorted(learned))

    def names(
        self, type_url: str, key: str, payloads: Callable[[], Iterable[bytes]], count: int
    ) -> tuple[str, ...]:
        cache_key = (type_url, key, count)
        found = self._known.get(cache_key)
        if found is None:
            found = self._known[cache_key] = LEARN[type_url](payloads())
            self.decoded += 1
        return found


@dataclass
class StreamResult:
    index: int
    bytes_received: int = 0
    responses: int = 0
    responses_by_type: dict[str, int] = field(default_factory=dict)
    synced_at: float | None = None  # seconds after the start of the run
    extra_responses: int = 0  # responses after the stream was synced (there should be none)
    # wall-clock (time.time()) arrival of each Route response, ACKed before it is recorded
    route_times: list[float] = field(default_factory=list)
    error: str | None = None
    failed_at: float | None = None  # seconds after the start of the run


def node_of(
    index: int, distinct_metadata: bool, prefix: str, distinct_identity: bool = False
) -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update({"role": "sidecar", "namespace": "default"})
    if distinct_metadata:
        # a distinct outbound listener address makes a distinct proxy shape (and snapshot) per stream
        metadata.update({"outbound_address": f"127.0.0.1:{20000 + index}"})
    if distinct_identity:
        # what sets the sidecars of a real mesh apart: labels, the inbound side, the workload identity
        metadata.update(
            {
                "labels": {"app": f"workload-{index:05d}", "version": "v1"},
                "inbound_address": f"127.0.0.2:{20000 + index}",
                "app_ports": str(40000 + index % 20000),
                "service_account": f"sa-{index:05d}",
            }
        )
    return base_pb2.Node(id=f"{prefix}-{index:05d}", cluster="bench", metadata=metadata)


class _Stream:
    def __init__(self, index: int, node: base_pb2.Node, names: NameCache, started: float) -> None:
        self.result = StreamResult(index)
        self.node = node
        self.names = names
        self.started = started
        self.received: set[str] = set()
        self.subscribed: dict[str, tuple[str, ...]] = {}

    def count(self, raw: bytes, type_url: str) -> None:
        self.result.bytes_received += len(raw)
        self.result.responses += 1
        short = type_url.rsplit(".", 1)[-1]
        self.result.responses_by_type[short] = self.result.responses_by_type.get(short, 0) + 1
        if self.result.synced_at is not None:
            self.result.extra_responses += 1

    def mark(self, type_url: str) -> None:
        self.received.add(type_url)
        if self.result.synced_at is None and self.received.issuperset(ALL_TYPES):
            self.result.synced_at = time.perf_counter() - self.started


async def sotw_stream(channel: grpc.aio.Channel, stream: _Stream) -> None:
    call = channel.stream_stream(
        SOTW_METHOD,
        request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
        response_deserializer=None,
    )()
    last: dict[str, tuple[str, str]] = {}  # type -> (version, nonce) of the last response
    try:
        await call.write(discovery_pb2.DiscoveryRequest(node=stream.node, type_url=CLUSTER))
        await call.write(discovery_pb2.DiscoveryRequest(type_url=LISTENER))
        while True:
            raw = await call.read()
            if raw is grpc.aio.EOF:
                raise ConnectionError("the server ended the stream")
            response = discovery_pb2.DiscoveryResponse.FromString(raw)
            type_url = response.type_url
            stream.count(raw, type_url)
            last[type_url] = (response.version_info, response.nonce)
            await call.write(
                discovery_pb2.DiscoveryRequest(
                    type_url=type_url,
                    version_info=response.version_info,
                    response_nonce=response.nonce,
                    resource_names=stream.subscribed.get(type_url, ()),
                )
            )
            if type_url == ROUTE:
                stream.result.route_times.append(time.time())
            dependent = DEPENDENT.get(type_url)
            if dependent is not None:
                wanted = stream.names.names(
                    type_url,
                    response.version_info,
                    functools.partial(_sotw_payloads, response),
                    len(response.resources),
                )
                if wanted != stream.subscribed.get(dependent):
                    stream.subscribed[dependent] = wanted
                    version, nonce = last.get(dependent, ("", ""))
                    await call.write(
                        discovery_pb2.DiscoveryRequest(
                            type_url=dependent,
                            version_info=version,
                            response_nonce=nonce,
                            resource_names=wanted,
                        )
                    )
            if dependent is not None or type_url in stream.subscribed:
                stream.mark(type_url)
    finally:
        call.cancel()


async def delta_stream(channel: grpc.aio.Channel, stream: _Stream) -> None:
    call = channel.stream_stream(
        DELTA_METHOD,
        request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
        response_deserializer=None,
    )()
    try:
        await call.write(discovery_pb2.DeltaDiscoveryRequest(node=stream.node, type_url=CLUSTER))
        await call.write(discovery_pb2.DeltaDiscoveryRequest(type_url=LISTENER))
        while True:
            raw = await call.read()
            if raw is grpc.aio.EOF:
                raise ConnectionError("the server ended the stream")
            response = discovery_pb2.DeltaDiscoveryResponse.FromString(raw)
            type_url = response.type_url
            stream.count(raw, type_url)
            await call.write(
                discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=response.nonce)
            )
            if type_url == ROUTE:
                stream.result.route_times.append(time.time())
            dependent = DEPENDENT.get(type_url)
            if dependent is not None:
                wanted = stream.names.delta_names(type_url, response)
                have = set(stream.subscribed.get(dependent, ()))
                new = [name for name in wanted if name not in have]
                if new or dependent not in stream.subscribed:
                    stream.subscribed[dependent] = tuple(sorted(have.union(wanted)))
                    await call.write(
                        discovery_pb2.DeltaDiscoveryRequest(
                            type_url=dependent,
                            resource_names_subscribe=new,
                        )
                    )
            if dependent is not None or type_url in stream.subscribed:
                stream.mark(type_url)
    finally:
        call.cancel()


async def _guard(
    run: Callable[[grpc.aio.Channel, _Stream], Any], channel: grpc.aio.Channel, stream: _Stream
) -> None:
    try:
        await run(channel, stream)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        stream.result.error = f"{type(exc).__name__}: {exc}"[:300]
        stream.result.failed_at = time.perf_counter() - stream.started


def _channel(target: str, index: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.max_receive_message_length", 512 * 1024 * 1024),
            # one TCP connection per channel: no subchannel sharing between channels with equal arguments
            ("grpc.use_local_subchannel_pool", 1),
            ("bench.channel_index", index),
        ],
    )


def default_channels(streams: int) -> int:
    """About 128 streams per channel (HTTP/2 connection), at most 16 connections."""
    return max(1, min(16, (streams + 127) // 128))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    channels = [_channel(args.target, i) for i in range(args.channels or default_channels(args.streams))]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), args.timeout)
        names = NameCache()
        cpu_start, started = time.process_time(), time.perf_counter()
        streams = [
            _Stream(
                i,
                node_of(i, args.distinct_metadata, args.node_prefix, args.distinct_identity),
                names,
                started,
            )
            for i in range(args.streams)
        ]
        driver = delta_stream if args.delta else sotw_stream
        tasks = [
            asyncio.create_task(_guard(driver, channels[i % len(channels)], s)) for i, s in enumerate(streams)
        ]
        deadline = started + args.timeout
        while time.perf_counter() < deadline:
            if all(s.result.synced_at is not None or s.result.error for s in streams):
                break
            await asyncio.sleep(0.005)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_start
        report = summarize(args, streams, wall, cpu, len(channels), names.decoded)
        sys.stdout.write(RESULT_PREFIX + json.dumps(report) + "\n")
        sys.stdout.flush()
        if args.hold:
            # keep the streams open (and ACKing), answering commands, until stdin closes
            await serve_commands(streams)
        report["extra_responses_at_exit"] = sum(s.result.extra_responses for s in streams)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return report
    finally:
        for channel in channels:
            await channel.close()


async def serve_commands(streams: Sequence[_Stream]) -> None:
    """`mark` / `wait T TIMEOUT` from stdin until end-of-file (see the module docstring)."""
    loop = asyncio.get_running_loop()
    marks = [0] * len(streams)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        words = line.split()
        if words == ["mark"]:
            marks = [len(s.result.route_times) for s in streams]
            sys.stdout.write(MARKED_LINE + "\n")
        elif len(words) == 3 and words[0] == "wait":
            edited, deadline = float(words[1]), time.perf_counter() + float(words[2])
            while time.perf_counter() < deadline:
                if all(len(s.result.route_times) > m for s, m in zip(streams, marks, strict=True)):
                    break
                await asyncio.sleep(0.005)
            latencies = sorted(
                s.result.route_times[m] - edited
                for s, m in zip(streams, marks, strict=True)
                if len(s.result.route_times) > m
            )
            report = {
                "streams": len(streams),
                "updated": len(latencies),
                "all_updated": len(latencies) == len(streams),
                "latencies_s": latencies,
                "errors": sum(1 for s in streams if s.result.error),
            }
            sys.stdout.write(EDIT_PREFIX + json.dumps(report) + "\n")
        else:
            sys.stdout.write(f"ADS_LOAD_ERROR unknown command {line.strip()!r}\n")
        sys.stdout.flush()


def summarize(
    args: argparse.Namespace, streams: Sequence[_Stream], wall: float, cpu: float, channels: int, decoded: int
) -> dict[str, Any]:
    results = [s.result for s in streams]
    synced = sorted(r.synced_at for r in results if r.synced_at is not None)
    sizes = [r.bytes_received for r in results]
    errors = [r.error for r in results if r.error]
    by_type: dict[str, int] = {}
    for r in results:
        for short, n in r.responses_by_type.items():
            by_type[short] = by_type.get(short, 0) + n
    return {
        "protocol": "delta" if args.delta else "sotw",
        "streams": len(results),
        "channels": channels,
        "distinct_metadata": args.distinct_metadata,
        "distinct_identity": args.distinct_identity,
        "synced": len(synced),
        "all_synced": len(synced) == len(results),
        "wall_s": max(synced) if len(synced) == len(results) and synced else wall,
        "first_synced_s": synced[0] if synced else None,
        "median_synced_s": statistics.median(synced) if synced else None,
        "client_cpu_s": cpu,
        "bytes_per_stream_mean": statistics.fmean(sizes) if sizes else 0,
        "bytes_per_stream_min": min(sizes, default=0),
        "bytes_per_stream_max": max(sizes, default=0),
        "bytes_total": sum(sizes),
        "responses_total": sum(r.responses for r in results),
        "responses_by_type": by_type,
        "extra_responses": sum(r.extra_responses for r in results),
        "decoded_responses": decoded,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "first_failed_s": min((r.failed_at for r in results if r.failed_at is not None), default=None),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", required=True, help="HOST:PORT of the ADS server")
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--channels", type=int, default=0, help="gRPC channels (default: ~128 streams each)")
    parser.add_argument("--delta", action="store_true", help="delta xDS instead of state of the world")
    parser.add_argument(
        "--distinct-metadata",
        action="store_true",
        help="a distinct outbound_address per stream (one snapshot per stream)",
    )
    parser.add_argument(
        "--distinct-identity",
        action="store_true",
        help="distinct labels, inbound address and service account per stream (one shape per stream)",
    )
    parser.add_argument("--node-prefix", default="bench")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds until the run gives up")
    parser.add_argument(
        "--hold",
        action="store_true",
        help="after printing the result keep the streams open until stdin closes",
    )
    args = parser.parse_args(argv)
    report = asyncio.run(run(args))
    if not args.hold:
        return 0 if report["all_synced"] and not report["errors"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
