"""CSDS on the xDS port takes the proxies' credential: no token → UNAUTHENTICATED, and a token sees only
the proxies of the identity it proves (a stranger must not read the mesh's configuration); and it never
shows a private key, though the proxy's own stream carries it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.protobuf import struct_pb2

from controlplane.model.identity import ProxyIdentity
from controlplane.translate.resources import CLUSTER, SECRET, Resources
from controlplane.xds.auth import TokenAuthenticator
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.redact import REDACTED
from controlplane.xds.server import XdsServer
from controlplane.xds.status import StatusRegistry


class _Claims:
    def __init__(self, namespace: str, service_account: str) -> None:
        self.namespace, self.service_account, self.role = namespace, service_account, "sidecar"


def _verify(token: str, now: datetime) -> _Claims:
    data = json.loads(token)  # the fake's token is its claims; the real one is a signed JWT
    return _Claims(data["ns"], data["sa"])


def _node(node_id: str, service_account: str) -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update({"service_account": service_account})
    return base_pb2.Node(id=node_id, metadata=metadata)


def _token(service_account: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", "Bearer " + json.dumps({"ns": "default", "sa": service_account})),)


@pytest.mark.asyncio
async def test_csds_needs_a_credential_and_shows_only_the_callers_identity() -> None:
    registry = StatusRegistry()
    auth = TokenAuthenticator(_verify, lambda: "cluster.local", clock=lambda: datetime.now(UTC))
    server = XdsServer(SnapshotCache(lambda _: Resources()), registry, "127.0.0.1:0", authenticator=auth)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            ads = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            calls = []
            for node_id, account in (("a-1", "a"), ("b-1", "b")):
                call = ads.StreamAggregatedResources(metadata=_token(account))
                request = discovery_pb2.DiscoveryRequest(node=_node(node_id, account), type_url=CLUSTER)
                await call.write(request)
                await asyncio.wait_for(call.read(), 5)
                calls.append(call)
            csds = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await csds.FetchClientStatus(csds_pb2.ClientStatusRequest())
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as forged:
                await csds.FetchClientStatus(csds_pb2.ClientStatusRequest(),
                                             metadata=(("authorization", "Bearer not-json"),))
            assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED
            seen = await csds.FetchClientStatus(csds_pb2.ClientStatusRequest(), metadata=_token("a"))
            assert [config.node.id for config in seen.config] == ["a-1"]
            stream = csds.StreamClientStatus(metadata=_token("b"))
            await stream.write(csds_pb2.ClientStatusRequest())
            streamed = await asyncio.wait_for(stream.read(), 5)
            assert [config.node.id for config in streamed.config] == ["b-1"]
            stream.cancel()
            for call in calls:
                call.cancel()
    finally:
        await server.close(0)


def test_scope_matches_namespace_service_account_and_role() -> None:
    auth = TokenAuthenticator(_verify, lambda: "td")
    visible = auth.scope(_token("a"))
    assert visible(ProxyIdentity(service_account="a"))
    assert not visible(ProxyIdentity(service_account="b"))
    assert not visible(ProxyIdentity(service_account="a", namespace="prod"))


@pytest.mark.asyncio
async def test_csds_never_shows_a_private_key() -> None:
    key = "-----BEGIN PRIVATE KEY-----\nTOP-SECRET-KEY-BYTES\n-----END PRIVATE KEY-----\n"

    def with_secret(_: ProxyIdentity) -> Resources:
        resources = Resources()
        secret = secret_pb2.Secret(name="default")
        secret.tls_certificate.private_key.inline_string = key
        secret.tls_certificate.certificate_chain.inline_string = "CERT"
        resources.add(SECRET, "default", secret)
        return resources

    registry = StatusRegistry()
    server = XdsServer(SnapshotCache(with_secret), registry, "127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            request = discovery_pb2.DiscoveryRequest(node=_node("p", "a"), type_url=SECRET,
                                                     resource_names=["default"])
            await call.write(request)
            response = await asyncio.wait_for(call.read(), 5)
            assert b"TOP-SECRET-KEY-BYTES" in response.SerializeToString()  # the proxy itself gets it
            csds = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
            dumped = await csds.FetchClientStatus(csds_pb2.ClientStatusRequest())
            assert b"TOP-SECRET-KEY-BYTES" not in dumped.SerializeToString()
            (generic,) = dumped.config[0].generic_xds_configs
            shown = secret_pb2.Secret.FromString(generic.xds_config.value)
            assert shown.tls_certificate.private_key.inline_string == REDACTED
            assert shown.tls_certificate.certificate_chain.inline_string == "CERT"
            call.cancel()
    finally:
        await server.close(0)
