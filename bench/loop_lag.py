"""Event-loop lag of the control plane's own work during a burst of new proxy shapes and a reload.

In-process, no gRPC streams: a `ControlPlane` (app.py) on N = 1,000 services (bench/scale.py's policy),
K distinct sidecar identities (bench/ads_load_client.py's `--distinct-identity`) that "connect" the way
the xDS server opens a stream (`SnapshotCache.prepare` when the checkout has it, then `watch`), then the
one-line edit and `ControlPlane.reload()`. Meanwhile two probes run on the same loop:
- lag: `asyncio.sleep(0.01)` and how much later than asked it returned;
- echo: a 1-byte round trip over a loopback TCP connection served by the same loop, every 10 ms (what a
  health check or an ACK waits for).
Streams' own protocol work (xds/delta.py) is not part of this: it isolates snapshot building, the change
log and certificates. Runs against any checkout: `PYTHONPATH=/work/main .venv/bin/python bench/loop_lag.py`.

    .venv/bin/python bench/loop_lag.py --shapes 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ads_load_client import node_of
from scale import edit_policy, percentile, write_policy

from controlplane.app import ControlPlane, Settings
from controlplane.xds.node import identity_of


class Probes:
    """Loop lag and loopback echo latency, sampled until stopped."""

    def __init__(self) -> None:
        # (when the probe started, how long it took beyond what it asked for): a sample belongs to the
        # phase it started in, even when the stall it measured ended after that phase
        self.lag: list[tuple[float, float]] = []
        self.echo: list[tuple[float, float]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(1):
                writer.write(data)
                await writer.drain()

        self._server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self._tasks = [asyncio.create_task(self._lag()), asyncio.create_task(self._echo(reader, writer))]

    async def _lag(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(0.01)
            self.lag.append((asked, time.perf_counter() - asked - 0.01))

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            started = time.perf_counter()
            writer.write(b"x")
            await reader.readexactly(1)
            self.echo.append((started, time.perf_counter() - started))
            await asyncio.sleep(0.01)

    def take(self, until: float) -> dict[str, float]:
        """Stats (ms) of the samples that started before `until` (time.perf_counter()) and were not
        taken yet, once they have all ended."""
        lag = sorted(v for t, v in self.lag if t < until) or [float("nan")]
        echo = sorted(v for t, v in self.echo if t < until) or [float("nan")]
        self.lag = [(t, v) for t, v in self.lag if t >= until]
        self.echo = [(t, v) for t, v in self.echo if t >= until]
        return {"lag_max_ms": lag[-1] * 1000, "lag_p99_ms": percentile(lag, 0.99) * 1000,
                "echo_max_ms": echo[-1] * 1000, "echo_p99_ms": percentile(echo, 0.99) * 1000,
                "echo_p50_ms": statistics.median(echo) * 1000, "samples": len(echo)}

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()


async def timed(work: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await work()
    return time.perf_counter() - started


async def run(shapes: int, services: int, work: Path) -> dict[str, Any]:
    policy = work / "policy"
    write_policy(policy, services)
    # never started: the ports are not bound
    plane = ControlPlane(Settings(config_dir=policy, xds_address="127.0.0.1:1", admin_address="127.0.0.1:1",
                                  watch=False, insecure_xds=True, ca_dir=work / "ca"))
    await plane.reload()
    cache = plane.cache
    identities = [identity_of(node_of(i, False, "lag", True)) for i in range(shapes)]
    prepare = getattr(cache, "prepare", None)  # absent in checkouts that build on the loop

    async def connect(identity: Any) -> None:
        if prepare is not None:
            await prepare(identity)
        cache.watch(identity)

    async def connect_all() -> None:
        await asyncio.gather(*(connect(identity) for identity in identities))

    try:  # what `serve` runs beside the servers, in checkouts that have it (gcpause.py before gcpolicy.py)
        try:
            from controlplane.gcpolicy import keep_collections_short
        except ImportError:
            from controlplane.gcpause import keep_collections_short  # type: ignore[no-redef]
        collecting: asyncio.Task[None] | None = asyncio.create_task(keep_collections_short())
    except ImportError:
        collecting = None
    probes = Probes()
    await probes.start()
    await asyncio.sleep(0.2)
    probes.take(time.perf_counter())
    out: dict[str, Any] = {"shapes": shapes, "services": services, "prepare": prepare is not None}
    out["connect_s"] = await timed(connect_all)
    connected = time.perf_counter()
    await asyncio.sleep(0.1)  # the probes that started during the connect end
    edit_policy(policy, 7)
    out["reload_s"] = await timed(plane.reload)
    reloaded = time.perf_counter()
    await asyncio.sleep(0.1)
    out["connect"] = probes.take(connected)
    out["reload"] = probes.take(reloaded)
    await probes.stop()
    if collecting is not None:
        collecting.cancel()
    flush = getattr(plane.mesh.certs, "flush", None)
    if flush is not None:
        await asyncio.to_thread(flush)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", type=int, default=500)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--slow", type=float, default=0.0,
                        help="log loop callbacks slower than this many seconds (asyncio debug mode)")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="sys.setswitchinterval (default: CPython's 0.005; 0.0005 measured no better)")
    args = parser.parse_args()
    interval = sys.getswitchinterval() if args.switch_interval is None else args.switch_interval
    sys.setswitchinterval(interval)
    with tempfile.TemporaryDirectory(prefix="cp-loop-lag-") as work, \
            asyncio.Runner(debug=args.slow > 0) as runner:
        if args.slow > 0:
            logging.basicConfig(level=logging.WARNING)
            runner.get_loop().slow_callback_duration = args.slow
        result = runner.run(run(args.shapes, args.services, Path(work)))
    result["switch_interval"] = interval
    print(json.dumps(result, indent=1))
    for phase in ("connect", "reload"):
        stats = result[phase]
        print(f"{phase}: {result[phase + '_s']:.2f} s; loop lag max {stats['lag_max_ms']:.0f} ms, "
              f"p99 {stats['lag_p99_ms']:.0f} ms; echo max {stats['echo_max_ms']:.0f} ms, "
              f"p99 {stats['echo_p99_ms']:.0f} ms, p50 {stats['echo_p50_ms']:.1f} ms", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
