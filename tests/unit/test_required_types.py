"""A proxy counts as synced only once it subscribed to every type its snapshot needs (`status --wait`).

Envoy asks for clusters first and for endpoints, listeners, routes and secrets only after it processed what
refers to them; a proxy that ACKed its clusters alone must not be reported SYNCED (CI saw `status --wait`
return while the README's sidecar held clusters only, and the next curl found no listener).
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from controlplane.app import make_factory
from controlplane.isolation import BuildFailures, isolated
from controlplane.model.identity import ProxyIdentity
from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, Resources
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.layers import Layered
from controlplane.xds.snapshot import Interner, Snapshot, any_reads_sds, reads_sds
from controlplane.xds.status import StatusRegistry
from tests.reliability.policy_support import IDENTITIES, demo_texts, load


def _demo_snapshot(identity: ProxyIdentity, with_secrets: bool) -> Snapshot:
    policy, diagnostics = load(demo_texts())
    assert diagnostics == []
    resources = isolated(policy, identity, BuildFailures())
    if with_secrets:  # what the mesh identity adds per proxy (app.py): referenced by the mTLS contexts
        for name in ("default", "ROOTCA"):
            resources.add(SECRET, name, secret_pb2.Secret(name=name))
    return Snapshot.build(resources, Interner())


def test_a_demo_sidecar_needs_every_type_and_its_mtls_reads_sds() -> None:
    sidecar = _demo_snapshot(IDENTITIES[1], with_secrets=True)
    assert sidecar.required_types() == {CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET}
    assert any(reads_sds(r.message) for r in sidecar.of_type(CLUSTER).values())
    assert any(reads_sds(r.message) for r in sidecar.of_type(LISTENER).values())
    # without secrets in the snapshot nothing waits for them
    assert SECRET not in _demo_snapshot(IDENTITIES[1], with_secrets=False).required_types()


def test_an_assembled_snapshot_checks_its_shared_layer_once_and_agrees_with_a_scan() -> None:
    policy, _ = load(demo_texts())
    cache = SnapshotCache(make_factory(policy))
    watch = cache.watch(IDENTITIES[1])
    try:
        snapshot = cache.snapshot(IDENTITIES[1])
        clusters = snapshot.of_type(CLUSTER)
        assert isinstance(clusters, Layered) and clusters.shared is not None
        for type_url in (CLUSTER, LISTENER):
            resources = snapshot.of_type(type_url)
            assert any_reads_sds(resources) == any(reads_sds(r.message) for r in resources.values())
        assert any_reads_sds(clusters)
    finally:
        watch.cancel()


def test_secrets_nothing_reads_are_not_required() -> None:
    resources = Resources()
    plain = cluster_pb2.Cluster(name="plain", type=cluster_pb2.Cluster.STATIC)
    resources.add(CLUSTER, plain.name, plain)
    resources.add(SECRET, "default", secret_pb2.Secret(name="default"))
    snapshot = Snapshot.build(resources, Interner())
    assert not reads_sds(plain)
    assert snapshot.required_types() == {CLUSTER}


def test_a_stream_that_acked_clusters_only_is_not_synced() -> None:
    registry = StatusRegistry()
    stream = registry.open("p-1", ProxyIdentity(), "delta")
    stream.use_snapshot("snap", 0.0)
    stream.sent(CLUSTER, "snap", "n1", 10, "snap")
    stream.acked(CLUSTER, "snap")
    required = frozenset({CLUSTER, LISTENER})
    [row] = registry.to_json(lambda _: "snap", required=lambda _: required)
    assert row["types"]["clusters"]["state"] == "SYNCED"
    assert row["synced"] is False
    stream.sent(LISTENER, "snap", "n2", 10, "snap")
    assert registry.to_json(lambda _: "snap", required=lambda _: required)[0]["synced"] is False
    stream.acked(LISTENER, "snap")
    assert registry.to_json(lambda _: "snap", required=lambda _: required)[0]["synced"] is True
