"""Tracing: the HTTP connection manager's `tracing` block and the collector cluster of its provider.

Mirrors what Istio generates (pilot/pkg/networking/core/tracing.go):

- opentelemetry → `envoy.tracers.opentelemetry` over gRPC (OTLP, the collector's port 4317) with
  `service_name` `<app>.<namespace>`; the collector cluster speaks HTTP/2, as gRPC needs;
- zipkin → `envoy.tracers.zipkin`, HTTP JSON v2 to `/api/v2/spans`, 128-bit trace ids and
  `shared_span_context: false`, so that each hop (client and server side) reports a span of its own with
  the previous hop's span as parent, as Istio configures it;
- sampling: `random_sampling` = randomSamplingPercentage, `client_sampling` and `overall_sampling` 100
  (Istio never limits those); the first proxy of a request decides, later hops follow the sampled flag of
  the propagated context (traceparent / x-b3-sampled);
- custom tags: literal / request header / environment variable of the Envoy process;
- `max_path_tag_length`: the provider's maxTagLength, else Istio's 256.

Collector clusters are STATIC when the provider's `service` is an IP and STRICT_DNS otherwise, named by
`names.telemetry_cluster`.
"""

from __future__ import annotations

import ipaddress

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import grpc_service_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2, zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.tracing.v3 import custom_tag_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf.message import Message

from controlplane.model.telemetry import CustomTag, TagSource, TracerKind, TracingConfig, TracingProvider
from controlplane.translate import names
from controlplane.translate.protos import duration_ms, pack

# Istio's defaults (pilot/pkg/networking/core/tracing.go).
DEFAULT_MAX_PATH_TAG_LENGTH = 256
ZIPKIN_ENDPOINT = "/api/v2/spans"


def tracing_config(config: TracingConfig) -> hcm.HttpConnectionManager.Tracing:
    provider = config.provider
    tracing = hcm.HttpConnectionManager.Tracing(
        client_sampling=percent_pb2.Percent(value=100.0),
        random_sampling=percent_pb2.Percent(value=config.sampling_percent),
        overall_sampling=percent_pb2.Percent(value=100.0),
        custom_tags=[_custom_tag(tag) for tag in config.custom_tags],
        provider=_provider(config),
    )
    tracing.max_path_tag_length.value = provider.max_tag_length or DEFAULT_MAX_PATH_TAG_LENGTH
    return tracing


def _provider(config: TracingConfig) -> http_tracer_pb2.Tracing.Http:
    provider = config.provider
    cluster = collector_cluster_name(provider)
    typed: Message
    if provider.kind is TracerKind.OPENTELEMETRY:
        grpc = grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster, authority=provider.host)
        )
        typed = opentelemetry_pb2.OpenTelemetryConfig(grpc_service=grpc, service_name=config.service_name)
        return http_tracer_pb2.Tracing.Http(name=names.OPENTELEMETRY_TRACER, typed_config=pack(typed))
    zipkin = zipkin_pb2.ZipkinConfig(
        collector_cluster=cluster,
        collector_endpoint=ZIPKIN_ENDPOINT,
        collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON,
        collector_hostname=provider.host,
        trace_id_128bit=True,
    )
    zipkin.shared_span_context.value = False
    return http_tracer_pb2.Tracing.Http(name=names.ZIPKIN_TRACER, typed_config=pack(zipkin))


def _custom_tag(tag: CustomTag) -> custom_tag_pb2.CustomTag:
    out = custom_tag_pb2.CustomTag(tag=tag.tag)
    if tag.source is TagSource.LITERAL:
        out.literal.value = tag.value
    elif tag.source is TagSource.HEADER:
        out.request_header.name = tag.value
        out.request_header.default_value = tag.default_value
    else:
        out.environment.name = tag.value
        out.environment.default_value = tag.default_value
    return out


def collector_cluster_name(provider: TracingProvider) -> str:
    return names.telemetry_cluster(provider.host, provider.port)


def collector_cluster(provider: TracingProvider, connect_timeout_ms: int) -> cluster_pb2.Cluster:
    """The cluster the tracer sends spans to: the provider's `service:port`."""
    name = collector_cluster_name(provider)
    endpoint = endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint())
    socket = endpoint.endpoint.address.socket_address
    socket.address = provider.host
    socket.port_value = provider.port
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC if _is_ip(provider.host) else cluster_pb2.Cluster.STRICT_DNS,
        connect_timeout=duration_ms(connect_timeout_ms),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])],
        ),
    )
    if cluster.type == cluster_pb2.Cluster.STRICT_DNS:
        # "localhost" and compose names may resolve to IPv6 first; collectors usually listen on IPv4.
        cluster.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
    if provider.kind is TracerKind.OPENTELEMETRY:
        options = http_protocol_options_pb2.HttpProtocolOptions()
        options.explicit_http_config.http2_protocol_options.SetInParent()
        cluster.typed_extension_protocol_options[names.HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(options))
    return cluster


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
