"""Downstream TLS: a gateway chain's TlsTermination → `envoy.transport_sockets.tls` with a
DownstreamTlsContext whose certificate (and, for MUTUAL, validation context) come over SDS on the ADS stream.

Istio's gateway settings: TLS 1.2 minimum unless `minProtocolVersion` says otherwise, ALPN `h2,http/1.1`
for HTTP servers (none for TCP), and `require_client_certificate` for MUTUAL — Envoy then refuses a
handshake without a client certificate that chains to the credential's `ca.crt`.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2

from controlplane.model.gatewaymodel import TlsTermination
from controlplane.translate import names
from controlplane.translate.ads import ads_config_source
from controlplane.translate.protos import pack


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads_config_source())


def downstream_tls_context(tls: TlsTermination) -> tls_pb2.DownstreamTlsContext:
    params = common_pb2.TlsParameters(
        tls_minimum_protocol_version=common_pb2.TlsParameters.TlsProtocol.Value(tls.min_version.value)
    )
    if tls.max_version is not None:
        params.tls_maximum_protocol_version = common_pb2.TlsParameters.TlsProtocol.Value(
            tls.max_version.value
        )
    common = tls_pb2.CommonTlsContext(
        tls_params=params,
        alpn_protocols=list(tls.alpn),
        tls_certificate_sds_secret_configs=[
            _sds(names.WORKLOAD_SECRET if tls.istio_mutual else names.secret(tls.credential))],
    )
    if tls.istio_mutual:
        common.validation_context_sds_secret_config.CopyFrom(_sds(names.ROOT_SECRET))
    elif tls.mutual:
        common.validation_context_sds_secret_config.CopyFrom(_sds(names.ca_secret(tls.credential)))
    context = tls_pb2.DownstreamTlsContext(common_tls_context=common)
    if tls.mutual:
        context.require_client_certificate.value = True
    return context


def downstream_transport_socket(tls: TlsTermination) -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(
        name=names.TLS_TRANSPORT_SOCKET, typed_config=pack(downstream_tls_context(tls))
    )
