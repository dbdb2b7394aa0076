"""The delta state machine's change-proportional pushes (xds/delta.py) send exactly what the reference
(tests/unit/delta_reference.py: every push looks at every resource) sends: same bytes, nonces, names and
removals, and the same per-type status, over random sequences of snapshots (shared layers reused, remade
with mostly equal contents, dropped; own overlays; plain snapshots), subscriptions, ACKs, NACKs, stale
nonces and reconnects with initial_resource_versions."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Any

import pytest
from delta_reference import DeltaState as ReferenceState
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from controlplane.model.identity import ProxyIdentity
from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SECRET
from controlplane.xds.delta import DeltaState
from controlplane.xds.layers import Layer, Layered
from controlplane.xds.response import Outgoing, nonce_factory
from controlplane.xds.snapshot import Interner, Resource, Snapshot, content_hash, type_version
from controlplane.xds.status import StatusRegistry

NAMES = {
    SECRET: [f"s{i}" for i in range(3)],
    CLUSTER: [f"c{i}" for i in range(8)],
    ENDPOINT: [f"c{i}" for i in range(8)] + ["e-extra"],
    LISTENER: [f"l{i}" for i in range(4)],
    ROUTE: [f"r{i}" for i in range(4)] + ["r-extra"],
}


def _message(type_url: str, name: str, variant: int) -> Message:
    tag = f"{name}#{variant}"
    if type_url == SECRET:
        return secret_pb2.Secret(name=tag)
    if type_url == CLUSTER:
        return cluster_pb2.Cluster(name=tag)
    if type_url == ENDPOINT:
        return endpoint_pb2.ClusterLoadAssignment(cluster_name=tag)
    if type_url == LISTENER:
        return listener_pb2.Listener(name=tag)
    return route_pb2.RouteConfiguration(name=tag)


class World:
    """Random snapshots shaped like assembled ones: per type a shared layer (kept, remade, or none) plus
    an own overlay of names outside it."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.interner = Interner()
        self.layers: dict[str, Layer | None] = dict.fromkeys(PUSH_ORDER)

    def _resource(self, type_url: str, name: str) -> Resource:
        return self.interner.resource(type_url, name, _message(type_url, name, self.rng.randrange(3)))

    def _layer(self, type_url: str) -> Layer | None:
        layer, roll = self.layers[type_url], self.rng.random()
        if layer is not None and roll < 0.5:
            return layer
        if roll < 0.6:
            return None
        before = layer.resources if layer is not None else {}
        chosen: dict[str, Resource] = {}
        for name in NAMES[type_url]:
            if name in before and self.rng.random() < 0.7:
                chosen[name] = before[name]
            elif self.rng.random() < 0.6:
                chosen[name] = self._resource(type_url, name)
        return Layer(chosen)

    def snapshot(self) -> Snapshot:
        by_type: dict[str, Mapping[str, Resource]] = {}
        for type_url in PUSH_ORDER:
            layer = self.layers[type_url] = self._layer(type_url)
            taken = layer.resources if layer is not None else {}
            own = {name: self._resource(type_url, name) for name in NAMES[type_url]
                   if name not in taken and self.rng.random() < 0.3}
            if layer is None and self.rng.random() < 0.5:
                by_type[type_url] = dict(sorted(own.items()))
            else:
                by_type[type_url] = Layered(layer, own)
        version = content_hash(*(f"{t}={type_version(by_type[t].values())}".encode() for t in PUSH_ORDER))
        eds = {name: name for name in by_type[CLUSTER]}
        rds = {name: frozenset({f"r{name[1:]}"}) for name in by_type[LISTENER]}
        return Snapshot(by_type, version, eds, rds)


class Client:
    """A scripted delta client driving the new machine and the reference with the same requests."""

    def __init__(self, rng: random.Random, snapshot: Snapshot) -> None:
        self.rng = rng
        self.registries = (StatusRegistry(), StatusRegistry())
        self.view: dict[str, dict[str, str]] = {t: {} for t in PUSH_ORDER}
        self.snapshot = snapshot
        self.fast_scans = 0
        self.connect()

    def connect(self) -> None:
        self.statuses = [r.open("proxy", ProxyIdentity(), "delta") for r in self.registries]
        self.machines: list[Any] = [
            Impl(status, self.snapshot, nonce_factory(status.stream_id))
            for Impl, status in zip((DeltaState, ReferenceState), self.statuses, strict=True)
        ]
        self.started: set[str] = set()
        self.pending: dict[str, list[tuple[str, dict[str, str], list[str]]]] = {t: [] for t in PUSH_ORDER}

    def reconnect(self) -> None:
        for registry, status in zip(self.registries, self.statuses, strict=True):
            registry.close(status)
        self.connect()

    def _record(self, out: list[Outgoing]) -> None:
        for response in out:
            parsed = discovery_pb2.DeltaDiscoveryResponse.FromString(response.payload)
            sent = {r.name: r.version for r in parsed.resources}
            assert tuple(sent) == response.names
            self.pending[response.type_url].append((response.nonce, sent, list(parsed.removed_resources)))

    def _both(self, call: str, argument: object) -> None:
        new, reference = (getattr(m, call)(argument) for m in self.machines)
        assert [dataclasses.astuple(o) for o in new] == [dataclasses.astuple(o) for o in reference]
        for type_url in PUSH_ORDER:
            assert self.statuses[0].of(type_url) == dataclasses.replace(
                self.statuses[1].of(type_url), sent_at=self.statuses[0].of(type_url).sent_at,
                acked_at=self.statuses[0].of(type_url).acked_at)
        self._record(new)

    def push(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._both("on_snapshot", snapshot)

    def _names(self, type_url: str) -> list[str]:
        pool = [*NAMES[type_url], "missing", "*"]
        return self.rng.sample(pool, self.rng.randrange(4))

    def request(self) -> None:
        type_url = self.rng.choice(PUSH_ORDER)
        request = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url)
        if type_url not in self.started:
            self.started.add(type_url)
            if self.rng.random() < 0.5:
                request.resource_names_subscribe.extend(self._names(type_url))
            for name, version in self.view[type_url].items():
                if self.rng.random() < 0.8:
                    request.initial_resource_versions[name] = version if self.rng.random() < 0.8 else "old"
            self._both("on_request", request)
            return
        waiting, roll = self.pending[type_url], self.rng.random()
        if waiting and roll < 0.6:
            nonce, sent, removed = waiting.pop(0 if self.rng.random() < 0.8 else -1)
            request.response_nonce = nonce
            if self.rng.random() < 0.2:
                request.error_detail.CopyFrom(status_pb2.Status(code=3, message="rejected c1 r2"))
            else:
                self.view[type_url].update(sent)
                for name in removed:
                    self.view[type_url].pop(name, None)
        elif roll < 0.7:
            request.response_nonce = "0-stale"
        if self.rng.random() < 0.3:
            request.resource_names_subscribe.extend(self._names(type_url))
        if self.rng.random() < 0.2:
            request.resource_names_unsubscribe.extend(self._names(type_url))
        self._both("on_request", request)


class CountingState(DeltaState):
    """Counts which paths ran: full scans, change-proportional ones, whole-layer initial responses."""

    scans: list[bool] = []
    whole_layer: list[bool] = []

    def _candidates(self, state: Any, current: Mapping[str, Resource]) -> Any:
        CountingState.scans.append(state.full)
        return super()._candidates(state, current)

    def _changes(self, type_url: str, state: Any) -> Any:
        changes = super()._changes(type_url, state)
        if changes.layer is not None:
            CountingState.whole_layer.append(state.wildcard)
        return changes


def _run(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    world = World(rng)
    monkeypatch.setattr(f"{__name__}.DeltaState", CountingState)
    CountingState.scans, CountingState.whole_layer = [], []
    client = Client(rng, world.snapshot())
    for _ in range(250):
        roll = rng.random()
        if roll < 0.3:
            client.push(world.snapshot())
        elif roll < 0.33:
            client.reconnect()
        else:
            client.request()


@pytest.mark.parametrize("seed", range(60))
def test_delta_pushes_equal_the_full_reference(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(seed, monkeypatch)
    # the change-proportional path ran, not only full scans
    assert CountingState.scans.count(False) > 20, CountingState.scans.count(False)


def test_whole_layer_path_ran_for_wildcard_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Initial responses that send a whole layer, to wildcard and to named subscriptions, are among the
    random sequences compared above."""
    seen: set[bool] = set()
    for seed in range(10):
        _run(seed, monkeypatch)
        seen.update(CountingState.whole_layer)
    assert seen == {True, False}


def test_wildcard_responses_splice_own_resources_into_the_layer_bytes() -> None:
    interner = Interner()
    layer = Layer({n: interner.resource(CLUSTER, n, _message(CLUSTER, n, 0)) for n in ("b", "d", "f")})
    own = {n: interner.resource(CLUSTER, n, _message(CLUSTER, n, 1)) for n in ("a", "c", "g")}
    merged = Layered(layer, own)
    expected = b"".join(merged[name].delta_field for name in merged)
    assert list(merged) == ["a", "b", "c", "d", "f", "g"]
    assert layer.delta_payload(own) == expected
    assert layer.delta_payload({}) == b"".join(r.delta_field for r in layer.resources.values())
    assert layer.sotw_payload(own) == b"".join(merged[name].sotw_field for name in merged)
    snapshot = Snapshot({CLUSTER: merged}, "v", {}, {})
    body = snapshot.sotw_body(CLUSTER, None)
    reference = Snapshot({CLUSTER: dict(merged)}, "v", {}, {}).sotw_body(CLUSTER, None)
    assert (body.version, body.payload, body.names) == (reference.version, reference.payload, reference.names)
    assert body.resources is merged  # referenced, not copied per shape
