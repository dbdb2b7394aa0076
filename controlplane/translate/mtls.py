"""Mesh TLS: upstream contexts (ISTIO_MUTUAL, SIMPLE, MUTUAL; auto mTLS by transport socket matches) and the
inbound listener's mTLS server context, all with certificates over SDS on the ADS stream.

Facts from Istio (istio: pilot/pkg/networking/core/cluster_tls.go, pilot/pkg/security/authn/utils/utils.go),
adapted to upstream Envoy (../shared/reference/mesh-security.md):
- client ALPN `istio` (+`h2` for HTTP/2 clusters): `istio-peer-exchange` needs istio-proxy's own filters;
- the server does not offer `istio` (it would break h2 negotiation) but `h2,http/1.1`, requires a client
  certificate and accepts any that chains to `ROOTCA` — who may call is authorization's question;
- TLS 1.2 minimum, 1.3 maximum, both sides.
"""

from __future__ import annotations

import ipaddress

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import struct_pb2

from controlplane.model.proxy_model import Cluster
from controlplane.model.tlsmodel import UpstreamTls, UpstreamTlsMode
from controlplane.translate import names
from controlplane.translate.ads import ads_config_source
from controlplane.translate.protos import pack

# Where Debian and Envoy's images keep the system CA bundle: SIMPLE TLS without a credential verifies
# the server against it (Istio's VERIFY_CERTIFICATE_AT_CLIENT default).
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
SERVER_ALPN = ("h2", "http/1.1")


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads_config_source())


def _tls_params() -> common_pb2.TlsParameters:
    return common_pb2.TlsParameters(
        tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2,
        tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3,
    )


def _san_matchers(sans: tuple[str, ...]) -> list[common_pb2.SubjectAltNameMatcher]:
    kind = common_pb2.SubjectAltNameMatcher
    return [
        kind(san_type=kind.URI if san.startswith("spiffe://") else kind.DNS,
             matcher=string_pb2.StringMatcher(exact=san))
        for san in sans
    ]


def upstream_tls_context(tls: UpstreamTls) -> tls_pb2.UpstreamTlsContext:
    context = tls_pb2.UpstreamTlsContext()
    context.common_tls_context.tls_params.CopyFrom(_tls_params())
    common = context.common_tls_context  # a reference: the constructor copied its argument
    if tls.sni and not _is_ip(tls.sni):
        context.sni = tls.sni
    if tls.mode is UpstreamTlsMode.ISTIO_MUTUAL:
        common.alpn_protocols.extend(["istio", "h2"] if tls.http2 else ["istio"])
        common.tls_certificate_sds_secret_configs.append(_sds(names.WORKLOAD_SECRET))
        if not tls.insecure_skip_verify:
            validation = common.combined_validation_context
            validation.default_validation_context.match_typed_subject_alt_names.extend(
                _san_matchers(tls.subject_alt_names))
            validation.validation_context_sds_secret_config.CopyFrom(_sds(names.ROOT_SECRET))
        return context
    if tls.http2:
        common.alpn_protocols.append("h2")
    if tls.mode is UpstreamTlsMode.MUTUAL and tls.credential is not None:
        common.tls_certificate_sds_secret_configs.append(_sds(names.secret(tls.credential)))
    if tls.insecure_skip_verify:
        return context
    sans = _san_matchers(tls.subject_alt_names)
    if tls.credential is not None and tls.credential_has_ca:
        validation = common.combined_validation_context
        validation.default_validation_context.match_typed_subject_alt_names.extend(sans)
        validation.validation_context_sds_secret_config.CopyFrom(_sds(names.ca_secret(tls.credential)))
    else:
        common.validation_context.trusted_ca.filename = SYSTEM_CA_BUNDLE
        common.validation_context.match_typed_subject_alt_names.extend(sans)
    return context


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def tls_transport_socket(context: tls_pb2.UpstreamTlsContext | tls_pb2.DownstreamTlsContext
                         ) -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name=names.TLS_TRANSPORT_SOCKET, typed_config=pack(context))


def apply_upstream_tls(out: cluster_pb2.Cluster, cluster: Cluster) -> None:
    tls = cluster.tls
    if tls is None:
        return
    socket = tls_transport_socket(upstream_tls_context(tls))
    if not tls.only_sidecars:
        out.transport_socket.CopyFrom(socket)
        return
    match = struct_pb2.Struct()
    match.update({names.TLS_MODE_KEY: names.TLS_MODE_ISTIO})
    raw = base_pb2.TransportSocket(
        name=names.RAW_BUFFER_TRANSPORT_SOCKET, typed_config=pack(raw_buffer_pb2.RawBuffer()))
    out.transport_socket_matches.extend([
        cluster_pb2.Cluster.TransportSocketMatch(name=names.TLS_MODE_ISTIO_MATCH, match=match,
                                                 transport_socket=socket),
        cluster_pb2.Cluster.TransportSocketMatch(name=names.TLS_MODE_DISABLED_MATCH,
                                                 match=struct_pb2.Struct(), transport_socket=raw),
    ])


def mark_sidecar_endpoint(metadata: base_pb2.Metadata) -> None:
    """Endpoint metadata that picks the `tlsMode-istio` transport socket."""
    metadata.filter_metadata[names.TRANSPORT_SOCKET_MATCH].update({names.TLS_MODE_KEY: names.TLS_MODE_ISTIO})


def inbound_mtls_context() -> tls_pb2.DownstreamTlsContext:
    common = tls_pb2.CommonTlsContext(
        tls_params=_tls_params(),
        alpn_protocols=list(SERVER_ALPN),
        tls_certificate_sds_secret_configs=[_sds(names.WORKLOAD_SECRET)],
    )
    common.combined_validation_context.default_validation_context.SetInParent()
    common.combined_validation_context.validation_context_sds_secret_config.CopyFrom(_sds(names.ROOT_SECRET))
    context = tls_pb2.DownstreamTlsContext(common_tls_context=common)
    context.require_client_certificate.value = True
    return context
