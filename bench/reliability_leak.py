"""Leak check: connect / subscribe / NACK / disconnect cycles against `controlplane serve`, server RSS.

Each cycle opens a new channel and an ADS stream (SotW and delta alternately) under a node id never used
before, subscribes to clusters, NACKs the response and disconnects. One anchor stream of the same proxy
shape stays open throughout, so the shape's snapshot stays cached and the cycles measure what streams,
NACKs and node ids leave behind (on main: ~1.3 KB of NACK memory per NACKing node id, never freed).

RSS (VmRSS of the server process) is read after a warm-up (allocator pools and caches fill up first) and
after the measured cycles; the growth is the figure. `python bench/reliability_leak.py --cycles 10000`
prints it and, with --write, records it in bench/results/reliability-leak.json; tests/reliability/
test_leak.py runs fewer cycles and asserts the same bound loosely.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # the harness: free ports, readiness polling
    sys.path.insert(0, str(ROOT))

from bench.machine import describe_machine  # noqa: E402
from tests.harness import free_port, wait_until  # noqa: E402

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LIMIT_BYTES = 5 * 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _node(node_id: str) -> base_pb2.Node:
    return base_pb2.Node(id=node_id, cluster="leak")


async def _cycle(target: str, index: int) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        node = _node(f"leak-{index}")
        if index % 2:
            delta = stub.DeltaAggregatedResources()
            await delta.write(discovery_pb2.DeltaDiscoveryRequest(node=node, type_url=CLUSTER))
            response = await delta.read()
            nack = discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=response.nonce)
            nack.error_detail.message = f"rejected by cycle {index}"
            await delta.write(nack)
            delta.cancel()
        else:
            sotw = stub.StreamAggregatedResources()
            await sotw.write(discovery_pb2.DiscoveryRequest(node=node, type_url=CLUSTER))
            response = await sotw.read()
            nack = discovery_pb2.DiscoveryRequest(type_url=CLUSTER, response_nonce=response.nonce,
                                                  version_info="held-" + str(index))
            nack.error_detail.message = f"rejected by cycle {index}"
            await sotw.write(nack)
            sotw.cancel()


async def _cycles(target: str, start: int, count: int, concurrency: int) -> None:
    indexes = iter(range(start, start + count))

    async def worker() -> None:
        for index in indexes:
            await _cycle(target, index)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _measure(target: str, pid: int, warmup: int, cycles: int, concurrency: int) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(target) as channel:  # the anchor: keeps the shape cached
        anchor = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        await anchor.write(discovery_pb2.DiscoveryRequest(node=_node("anchor"), type_url=CLUSTER))
        await anchor.read()
        await _cycles(target, 0, warmup, concurrency)
        await asyncio.sleep(0.5)
        before = rss_bytes(pid)
        started = time.monotonic()
        await _cycles(target, warmup, cycles, concurrency)
        took = time.monotonic() - started
        await asyncio.sleep(0.5)
        after = rss_bytes(pid)
        anchor.cancel()
    return {"warmup_cycles": warmup, "cycles": cycles, "seconds": round(took, 1),
            "rss_before_mb": round(before / 2**20, 2), "rss_after_mb": round(after / 2**20, 2),
            "growth_mb": round((after - before) / 2**20, 2)}


def run(cycles: int, warmup: int, concurrency: int = 8, config: Path = ROOT / "config",
        log: Path | None = None, server_root: Path = ROOT) -> dict[str, Any]:
    """Start a server on free loopback ports, run the cycles, stop it (by its PID); the figures."""
    xds, admin = f"127.0.0.1:{free_port()}", free_port()
    argv = [sys.executable, "-m", "controlplane", "--log-level", "WARNING", "serve", "--config", str(config),
            "--xds-address", xds, "--admin-address", f"127.0.0.1:{admin}", "--no-watch",
            # the cycles measure the protocol, not authentication; the CA lives in a temporary directory
            "--insecure-xds", "--ca-dir", tempfile.mkdtemp(prefix="leak-ca-")]
    output = log.open("wb") if log is not None else subprocess.DEVNULL
    # `python -m` imports controlplane from the working directory first: --server-root compares checkouts
    server = subprocess.Popen(argv, stdout=output, stderr=output, cwd=server_root)
    try:
        import urllib.request

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as reply:
                    return bool(reply.status == 200)
            except OSError:
                return False

        wait_until(ready, timeout=30, what="the control plane's /readyz")
        return asyncio.run(_measure(xds, server.pid, warmup, cycles, concurrency))
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if log is not None:
            output.close()  # type: ignore[union-attr]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--server-root", type=Path, default=ROOT,
                        help="the checkout whose server to run (e.g. main, for a before/after figure)")
    parser.add_argument("--write", action="store_true", help="record in bench/results/reliability-leak.json")
    args = parser.parse_args()
    figures = run(args.cycles, args.warmup, args.concurrency, server_root=args.server_root)
    figures["server_root"] = str(args.server_root)
    figures["limit_mb"] = LIMIT_BYTES / 2**20
    figures["machine"] = describe_machine(["grpcio", "protobuf", "aiohttp"])
    figures["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(json.dumps(figures, indent=2))
    if args.write:
        (HERE / "results" / "reliability-leak.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["growth_mb"] * 2**20 < LIMIT_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
