"""Snapshots: content-hash versions, shared bytes, spliced wire encoding, consistency."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.translate.resources import CLUSTER, Resources
from controlplane.xds.snapshot import Interner, Snapshot, type_version


def _eds_cluster(name: str, timeout: int = 1) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    cluster.connect_timeout.FromSeconds(timeout)
    cluster.eds_cluster_config.eds_config.ads.SetInParent()
    cluster.eds_cluster_config.eds_config.resource_api_version = config_source_pb2.V3
    return cluster


def _static_cluster(name: str, timeout: int = 1) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC)
    cluster.connect_timeout.FromSeconds(timeout)
    return cluster


def _snapshot(interner: Interner, *clusters: cluster_pb2.Cluster) -> Snapshot:
    resources = Resources()
    for cluster in clusters:
        resources.add(CLUSTER, cluster.name, cluster)
    return Snapshot.build(resources, interner)


def test_versions_are_content_hashes_equal_across_interners() -> None:
    one = _snapshot(Interner(), _static_cluster("a"), _static_cluster("b"))
    two = _snapshot(Interner(), _static_cluster("b"), _static_cluster("a"))
    assert one.version == two.version
    assert one.of_type(CLUSTER)["a"].version == two.of_type(CLUSTER)["a"].version
    changed = _snapshot(Interner(), _static_cluster("a", timeout=2), _static_cluster("b"))
    assert changed.of_type(CLUSTER)["a"].version != one.of_type(CLUSTER)["a"].version
    assert changed.of_type(CLUSTER)["b"].version == one.of_type(CLUSTER)["b"].version
    assert changed.version != one.version


def test_interner_shares_resource_objects_between_snapshots() -> None:
    interner = Interner()
    first = _snapshot(interner, _static_cluster("a"))
    second = _snapshot(interner, _static_cluster("a"), _static_cluster("b"))
    assert first.of_type(CLUSTER)["a"] is second.of_type(CLUSTER)["a"]


def test_spliced_sotw_and_delta_bytes_parse_back() -> None:
    snapshot = _snapshot(Interner(), _static_cluster("a"), _static_cluster("b", timeout=3))
    resources = list(snapshot.of_type(CLUSTER).values())
    header = discovery_pb2.DiscoveryResponse(version_info="v", type_url=CLUSTER, nonce="n")
    sotw = discovery_pb2.DiscoveryResponse.FromString(
        header.SerializeToString() + b"".join(r.sotw_field for r in resources)
    )
    assert (sotw.version_info, sotw.nonce, sotw.type_url) == ("v", "n", CLUSTER)
    decoded = [cluster_pb2.Cluster.FromString(any_.value) for any_ in sotw.resources]
    assert [c.name for c in decoded] == ["a", "b"]
    assert decoded[1].connect_timeout.seconds == 3
    assert all(any_.type_url == CLUSTER for any_ in sotw.resources)
    delta = discovery_pb2.DeltaDiscoveryResponse.FromString(b"".join(r.delta_field for r in resources))
    assert [(r.name, r.version) for r in delta.resources] == [(r.name, r.version) for r in resources]
    assert cluster_pb2.Cluster.FromString(delta.resources[0].resource.value) == resources[0].message


def test_type_version_depends_on_names_and_versions_only() -> None:
    snapshot = _snapshot(Interner(), _static_cluster("a"), _static_cluster("b"))
    values = list(snapshot.of_type(CLUSTER).values())
    assert type_version(values) == type_version(reversed(values))
    assert type_version(values[:1]) != type_version(values)
    assert type_version([]) == "empty"


@pytest.mark.parametrize("with_endpoints", [False, True])
def test_consistency_requires_endpoints_for_eds_clusters(with_endpoints: bool) -> None:
    from envoy.config.endpoint.v3 import endpoint_pb2

    from controlplane.translate.resources import ENDPOINT

    resources = Resources()
    resources.add(CLUSTER, "a", _eds_cluster("a"))
    if with_endpoints:
        resources.add(ENDPOINT, "a", endpoint_pb2.ClusterLoadAssignment(cluster_name="a"))
    errors = Snapshot.build(resources, Interner()).consistency_errors()
    assert bool(errors) is not with_endpoints
