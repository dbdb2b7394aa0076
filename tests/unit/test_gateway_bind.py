"""A gateway proxy's default bind address (node metadata `gateway_bind`): used by Gateway servers without
`bind`, never by servers that name one; bad values are refused at connect time."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2

from controlplane.api.loader import load_policy_texts
from controlplane.model import build_proxy
from controlplane.model.identity import ProxyIdentity, Role
from controlplane.xds.node import NodeError, identity_of

POLICY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP, targetPort: 18080}
    hosts: ["*"]
  - port: {number: 81, name: http-pinned, protocol: HTTP, targetPort: 18081}
    bind: 127.0.0.5
    hosts: ["*"]
"""


def _addresses(gateway_bind: str) -> list[tuple[str, int]]:
    policy, diagnostics = load_policy_texts([("gw.yaml", POLICY)])
    assert diagnostics == []
    identity = ProxyIdentity(
        role=Role.GATEWAY, namespace="istio-system", labels=(("istio", "ingressgateway"),),
        gateway_bind=gateway_bind,
    )
    model = build_proxy(policy, identity)
    assert model.gateway is not None
    return sorted((listener.address, listener.port) for listener in model.gateway.listeners)


def test_default_bind_is_istios_and_can_be_loopback() -> None:
    assert _addresses("0.0.0.0") == [("0.0.0.0", 18080), ("127.0.0.5", 18081)]
    assert _addresses("127.0.0.1") == [("127.0.0.1", 18080), ("127.0.0.5", 18081)]


def test_node_metadata_gateway_bind() -> None:
    node = base_pb2.Node(id="gw")
    node.metadata.update({"role": "gateway", "gateway_bind": "127.0.0.1"})
    assert identity_of(node).gateway_bind == "127.0.0.1"
    assert identity_of(base_pb2.Node(id="plain")).gateway_bind == "0.0.0.0"
    node.metadata.update({"gateway_bind": "localhost"})
    with pytest.raises(NodeError, match="gateway_bind"):
        identity_of(node)
