"""Envoy bootstrap generation: the static config that points a proxy at this control plane over ADS.

The proxy's identity travels in `node.metadata` (keys in controlplane/model/identity.py), so the bootstrap is
the only per-proxy file a user keeps; everything else arrives over xDS.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import (
    address_pb2,
    backoff_pb2,
    base_pb2,
    config_source_pb2,
    grpc_service_pb2,
    protocol_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import duration_pb2, json_format, struct_pb2

from controlplane.model.identity import (
    META_APP_PORTS,
    META_GATEWAY_BIND,
    META_HEALTH_ADDRESS,
    META_INBOUND_ADDRESS,
    META_LABELS,
    META_NAMESPACE,
    META_OUTBOUND_ADDRESS,
    META_ROLE,
    META_SERVICE_ACCOUNT,
    Role,
    SocketAddress,
)
from controlplane.prometheus import prometheus_cluster, prometheus_listener

XDS_CLUSTER = "xds_cluster"
# The control plane's own identity ends with this (spiffe://<trustDomain>/ns/<rootNamespace>/sa/controlplane).
XDS_SERVER_SAN_SUFFIX = "/sa/controlplane"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@dataclass(frozen=True)
class BootstrapSettings:
    node_id: str
    xds_address: SocketAddress
    admin_address: SocketAddress = field(default_factory=lambda: SocketAddress("127.0.0.1", 15000))
    outbound_address: SocketAddress | None = None
    inbound_address: SocketAddress | None = None
    app_ports: tuple[int, ...] = ()
    health_address: SocketAddress | None = None
    gateway_bind: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    namespace: str = "default"
    service_account: str = "default"
    # the proxy's credential (controlplane token), sent as `authorization: Bearer` on the xDS stream
    token: str | None = None
    # PEM of the mesh root: the xDS connection is TLS and the server must chain to it (serve --xds-tls)
    xds_ca: bytes | None = None
    # the same, as a file Envoy reads when it starts (compose: the CA volume, written at run time)
    xds_ca_file: str | None = None
    # Istio's 15090: a listener exposing only /stats/prometheus of the admin interface (prometheus.py).
    prometheus_address: SocketAddress | None = None
    role: Role = Role.SIDECAR
    delta: bool = True
    # `region/zone/subzone`: node.locality (locality load balancing, model/locality.py).
    locality: str = ""



# Envoy's own xDS reconnect backoff grows to 30 s (0.5 s base): a proxy that saw the control plane go down
# for a few seconds then waited up to ~10 s more after it was back. Capped at 1 s, a restarted control
# plane has its proxies back within about a second (measured with Envoy 1.40: reconnect attempts every
# 0.25-1 s instead of 0.5, 2.4, 4, 9 s); a reconnect is cheap for the server (versions are content hashes).
_XDS_RETRY = base_pb2.RetryPolicy(
    retry_back_off=backoff_pb2.BackoffStrategy(base_interval=duration_pb2.Duration(nanos=250_000_000),
                                               max_interval=duration_pb2.Duration(seconds=1)))

def _socket(address: SocketAddress) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=address.host, port_value=address.port)
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _xds_cluster(address: SocketAddress) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=XDS_CLUSTER,
        # a hostname (compose service name) needs DNS; an IP does not
        type=cluster_pb2.Cluster.STATIC if _is_ip(address.host) else cluster_pb2.Cluster.STRICT_DNS,
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=XDS_CLUSTER,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
                endpoint_components_pb2.LbEndpoint(
                    endpoint=endpoint_components_pb2.Endpoint(address=_socket(address)))
            ])],
        ),
    )
    cluster.connect_timeout.FromSeconds(1)
    options = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions(
                # detect a dead control plane quickly and reconnect
                connection_keepalive=protocol_pb2.KeepaliveSettings()
            )
        )
    )
    keepalive = options.explicit_http_config.http2_protocol_options.connection_keepalive
    keepalive.interval.FromSeconds(30)
    keepalive.timeout.FromSeconds(5)
    cluster.typed_extension_protocol_options[_HTTP_OPTIONS].Pack(options)
    return cluster


def _xds_tls(root: base_pb2.DataSource) -> base_pb2.TransportSocket:
    """TLS to the control plane: its certificate must chain to the mesh root (pinned inline) and name the
    control plane's SPIFFE identity (`.../sa/controlplane`, security/xds_tls.py); gRPC needs ALPN h2."""
    common = tls_pb2.CommonTlsContext(alpn_protocols=["h2"])
    common.tls_params.tls_minimum_protocol_version = common_pb2.TlsParameters.TLSv1_2
    validation = common.validation_context
    validation.trusted_ca.CopyFrom(root)
    validation.match_typed_subject_alt_names.append(common_pb2.SubjectAltNameMatcher(
        san_type=common_pb2.SubjectAltNameMatcher.URI,
        matcher=string_pb2.StringMatcher(suffix=XDS_SERVER_SAN_SUFFIX)))
    context = tls_pb2.UpstreamTlsContext(common_tls_context=common)
    socket = base_pb2.TransportSocket(name="envoy.transport_sockets.tls")
    socket.typed_config.Pack(context)
    return socket


def build_bootstrap(settings: BootstrapSettings) -> bootstrap_pb2.Bootstrap:
    metadata: dict[str, object] = {
        META_ROLE: settings.role.value,
        META_NAMESPACE: settings.namespace,
        META_SERVICE_ACCOUNT: settings.service_account,
        META_LABELS: dict(settings.labels),
    }
    if settings.outbound_address is not None:
        metadata[META_OUTBOUND_ADDRESS] = str(settings.outbound_address)
    if settings.inbound_address is not None:
        metadata[META_INBOUND_ADDRESS] = str(settings.inbound_address)
    if settings.app_ports:
        metadata[META_APP_PORTS] = ",".join(str(p) for p in settings.app_ports)
    if settings.health_address is not None:
        metadata[META_HEALTH_ADDRESS] = str(settings.health_address)
    if settings.gateway_bind is not None:
        metadata[META_GATEWAY_BIND] = settings.gateway_bind
    node_metadata = struct_pb2.Struct()
    node_metadata.update(metadata)
    labels = dict(settings.labels)
    ads = config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )
    api_type = config_source_pb2.ApiConfigSource.DELTA_GRPC if settings.delta else (
        config_source_pb2.ApiConfigSource.GRPC)
    locality = dict(zip(("region", "zone", "sub_zone"), settings.locality.split("/"), strict=False))
    bootstrap = bootstrap_pb2.Bootstrap(
        node=base_pb2.Node(
            id=settings.node_id,
            # Istio's service cluster, <app>.<namespace>: Zipkin names spans by it, and the
            # OpenTelemetry tracer's service.name uses the same (model/telemetry.py)
            cluster=f"{labels.get('app', settings.node_id)}.{settings.namespace}",
            metadata=node_metadata,
        ),
        admin=bootstrap_pb2.Admin(address=_socket(settings.admin_address)),
        dynamic_resources=bootstrap_pb2.Bootstrap.DynamicResources(
            ads_config=config_source_pb2.ApiConfigSource(
                api_type=api_type,
                transport_api_version=config_source_pb2.V3,
                set_node_on_first_message_only=True,
                grpc_services=[grpc_service_pb2.GrpcService(
                    envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=XDS_CLUSTER,
                                                                      retry_policy=_XDS_RETRY))],
            ),
            cds_config=ads,
            lds_config=ads,
        ),
        static_resources=bootstrap_pb2.Bootstrap.StaticResources(
            clusters=[_xds_cluster(settings.xds_address)]
        ),
    )
    if settings.token is not None:
        grpc = bootstrap.dynamic_resources.ads_config.grpc_services[0]
        header = base_pb2.HeaderValue(key="authorization", value=f"Bearer {settings.token}")
        grpc.initial_metadata.append(header)
    if settings.xds_ca is not None or settings.xds_ca_file is not None:
        root = base_pb2.DataSource(inline_bytes=settings.xds_ca) if settings.xds_ca is not None else (
            base_pb2.DataSource(filename=settings.xds_ca_file))
        bootstrap.static_resources.clusters[0].transport_socket.CopyFrom(_xds_tls(root))
    if settings.locality:
        bootstrap.node.locality.CopyFrom(base_pb2.Locality(**locality))
    if settings.prometheus_address is not None:
        bootstrap.static_resources.clusters.append(prometheus_cluster(settings.admin_address))
        bootstrap.static_resources.listeners.append(prometheus_listener(settings.prometheus_address))
    return bootstrap


def bootstrap_yaml(settings: BootstrapSettings) -> str:
    # via JSON text: MessageToDict returns OrderedDicts for Any fields, which safe_dump refuses
    text = json_format.MessageToJson(build_bootstrap(settings), preserving_proto_field_name=True)
    as_dict = json.loads(text)
    # node.metadata is a protobuf Struct, a map: its JSON key order follows the process's hash seed, so
    # sort it to make the output reproducible (checked-in bootstraps are compared with it)
    node = as_dict.get("node", {})
    if "metadata" in node:
        node["metadata"] = _sorted_keys(node["metadata"])
    return yaml.safe_dump(as_dict, sort_keys=False)


def _sorted_keys(value: object) -> object:
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    return value
