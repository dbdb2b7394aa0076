"""The build stage's Istio semantics: host resolution and domains, DestinationRule merging, retry policies,
routes to subsets, outbound traffic policy, TCP listeners, inbound listener and its node metadata."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from controlplane.api.hosts import HostIndex, domains
from controlplane.api.loader import load_policy_texts
from controlplane.model import build_proxy
from controlplane.model.cluster_policy import LbPolicy
from controlplane.model.identity import ProxyIdentity, SocketAddress
from controlplane.model.proxy_model import OutboundPolicy, ProxyModel
from controlplane.model.retries import parse_retry_on, policy
from controlplane.model.routemodel import DirectResponse, Forward
from controlplane.translate import names
from controlplane.translate.resources import CLUSTER, LISTENER, ROUTE
from controlplane.translate.translator import translate_proxy
from controlplane.xds.node import NodeError, identity_of


def build(text: str, proxy: ProxyIdentity | None = None) -> ProxyModel:
    loaded, diagnostics = load_policy_texts([("p.yaml", text)])
    assert [str(d) for d in diagnostics] == []
    return build_proxy(loaded, proxy or ProxyIdentity())


SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  resolution: STATIC
  ports: [{number: 9080, name: http}, {number: 9081, name: admin}]
  endpoints:
  - {address: 127.0.0.1, labels: {version: v1}}
  - {address: 127.0.0.2, labels: {version: v2}}
"""


def test_host_references_resolve_like_istio() -> None:
    index = HostIndex(
        [("reviews", "shop"), ("details.shop.svc.cluster.local", "shop"), ("api.example.com", "x")]
    )
    assert index.resolve("reviews", "other") == "reviews"
    assert index.resolve("reviews.shop", "other") == "reviews"
    assert index.resolve("reviews.shop.svc.cluster.local", "other") == "reviews"
    assert index.resolve("details", "shop") == "details.shop.svc.cluster.local"
    assert index.resolve("details", "other") is None
    assert index.resolve("api.example.com", "shop") == "api.example.com"


def test_domains() -> None:
    assert domains("details.shop.svc.cluster.local", "shop", "shop")[-1] == "details"
    assert "details" not in domains("details.shop.svc.cluster.local", "shop", "other")
    assert domains("api.example.com", "x", "x") == ["api.example.com"]


def test_destination_rule_subset_and_port_level_merge() -> None:
    rule = """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {tcp: {maxConnections: 7}}
    portLevelSettings:
    - port: {number: 9081}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool: {tcp: {maxConnections: 3}}
"""
    model = build(SERVICE + rule)
    by_name = {names.outbound_cluster(c.ref): c for c in model.clusters}
    assert set(by_name) == {
        "outbound|9080||reviews",
        "outbound|9080|v2|reviews",
        "outbound|9081||reviews",
        "outbound|9081|v2|reviews",
    }
    parent, subset = by_name["outbound|9080||reviews"], by_name["outbound|9080|v2|reviews"]
    assert (parent.lb_policy, parent.policy.connection_pool.max_connections) == (LbPolicy.ROUND_ROBIN, 7)
    # The subset's connection pool replaces the parent's; its load balancer is inherited.
    assert (subset.lb_policy, subset.policy.connection_pool.max_connections) == (LbPolicy.ROUND_ROBIN, 3)
    assert [e.address for e in subset.endpoints] == ["127.0.0.2"]
    # Port-level settings replace the whole policy for that port (no inherited connection pool).
    port_level = by_name["outbound|9081||reviews"]
    assert (port_level.lb_policy, port_level.policy.connection_pool.max_connections) == (
        LbPolicy.RANDOM,
        None,
    )


def test_retry_policies() -> None:
    assert parse_retry_on("5xx,503,reset,503") == ("5xx,reset,retriable-status-codes", (503,))
    default = policy(None)
    assert default is not None and default.num_retries == 2 and default.retriable_status_codes == (503,)


def test_weighted_routes_skip_weight_zero_and_missing_subsets_answer_503() -> None:
    vs = """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /split}}]
    route:
    - {destination: {host: reviews, subset: v1, port: {number: 9080}}, weight: 100}
    - {destination: {host: reviews, subset: v2, port: {number: 9080}}, weight: 0}
  - route: [{destination: {host: reviews, subset: v3, port: {number: 9080}}}]
"""
    loaded, diagnostics = load_policy_texts([("p.yaml", SERVICE + vs)])
    assert [d.field for d in diagnostics] == ["spec.http[1].route[0].destination.subset"]
    model = build_proxy(loaded, ProxyIdentity())
    assert model.outbound_http is not None
    split, missing = model.outbound_http.virtual_hosts[0].routes
    assert isinstance(split.action, Forward) and [w.cluster.subset for w in split.action.clusters] == ["v1"]
    assert missing.action == DirectResponse(503)


@pytest.mark.parametrize("mode", ["ALLOW_ANY", "REGISTRY_ONLY"])
def test_outbound_traffic_policy(mode: str) -> None:
    mesh = "---\napiVersion: controlplane.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: m}\nspec:\n"
    mesh += f"  outboundTrafficPolicy: {{mode: {mode}}}\n  connectTimeout: 1s\n"
    model = build(SERVICE + mesh)
    assert model.outbound_http is not None and model.outbound_http.outbound_policy is OutboundPolicy(mode)
    assert all(c.connect_timeout_ms == 1000 for c in model.clusters)
    resources = translate_proxy(model)
    catch_all = resources.by_type[ROUTE][names.OUTBOUND_HTTP_ROUTE_CONFIG].virtual_hosts[-1]  # type: ignore[attr-defined]
    assert list(catch_all.domains) == ["*"]
    if mode == "ALLOW_ANY":
        assert catch_all.routes[0].route.cluster == names.PASSTHROUGH_CLUSTER
        assert names.PASSTHROUGH_CLUSTER in resources.by_type[CLUSTER]
    else:
        assert catch_all.routes[0].direct_response.status == 502
        assert names.PASSTHROUGH_CLUSTER not in resources.by_type[CLUSTER]


def test_tcp_service_without_addresses_gets_no_listener() -> None:
    tcp = SERVICE.replace("{number: 9081, name: admin}", "{number: 5432, name: pg, protocol: TCP}")
    assert build(tcp).tcp_listeners == ()
    with_vip = tcp.replace("  resolution: STATIC", "  addresses: [127.0.0.9]\n  resolution: STATIC")
    (listener,) = build(with_vip).tcp_listeners
    assert (listener.address, listener.port) == ("127.0.0.9", 5432)


def test_inbound_listener() -> None:
    proxy = ProxyIdentity(inbound_address=SocketAddress.parse("0.0.0.0:15006"), app_ports=(9101, 9102))
    model = build(SERVICE, proxy)
    assert model.inbound is not None and model.inbound.app_host == "127.0.0.1"
    resources = translate_proxy(model)
    assert {"inbound|9101||", "inbound|9102||"} <= set(resources.by_type[CLUSTER])
    assert names.INBOUND_HTTP_LISTENER in resources.by_type[LISTENER]
    config = resources.by_type[ROUTE][names.INBOUND_HTTP_ROUTE_CONFIG]
    assert [list(v.domains) for v in config.virtual_hosts] == [["*:9102"], ["*"]]  # type: ignore[attr-defined]


def _node(**metadata: object) -> base_pb2.Node:
    struct = struct_pb2.Struct()
    struct.update(metadata)
    return base_pb2.Node(id="n", metadata=struct)


def test_node_metadata_inbound_keys() -> None:
    identity = identity_of(_node(inbound_address="127.0.0.1:15006", app_ports="9101, 9102"))
    assert identity.inbound_address == SocketAddress("127.0.0.1", 15006)
    assert identity.app_ports == (9101, 9102)
    assert identity_of(_node(app_ports=[9101.0])).app_ports == (9101,)
    assert identity_of(_node()).inbound_address is None
    with pytest.raises(NodeError, match="app_ports"):
        identity_of(_node(inbound_address="127.0.0.1:15006"))
    with pytest.raises(NodeError, match="app_ports"):
        identity_of(_node(app_ports="http"))
