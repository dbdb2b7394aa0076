"""The clusters Envoy fetches RequestAuthentication `jwksUri` keys through, one per (host, port).

jwt_authn's `remote_jwks` names a cluster (translate/jwt.py); the control plane generates it here, next
to the proxy's other clusters: STATIC for an IP host, STRICT_DNS otherwise, and for an https URI a TLS
transport socket that verifies the server against the system CA bundle with SNI = the URI's host (as
Istio's istiod would fetch it). Several rules (or several RequestAuthentications) that fetch from the same
server share one cluster.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from controlplane.api.requestauthentication import JwksUri
from controlplane.model.authz import Authz
from controlplane.translate import names
from controlplane.translate.mtls import SYSTEM_CA_BUNDLE, tls_transport_socket
from controlplane.translate.protos import duration_ms


def jwks_cluster_name(remote: JwksUri) -> str:
    return names.jwks_cluster(remote.host, remote.port)


def jwks_clusters(authz: Authz | None, connect_timeout_ms: int) -> list[cluster_pb2.Cluster]:
    """The clusters the proxy's remote JWKS providers need, sorted by name, each once."""
    if authz is None:
        return []
    remotes = {jwks_cluster_name(p.remote): p.remote for p in authz.jwt if p.remote is not None}
    return [_cluster(name, remotes[name], connect_timeout_ms) for name in sorted(remotes)]


def _cluster(name: str, remote: JwksUri, connect_timeout_ms: int) -> cluster_pb2.Cluster:
    endpoint = endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint())
    socket = endpoint.endpoint.address.socket_address
    socket.address = remote.host
    socket.port_value = remote.port
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC if remote.is_ip else cluster_pb2.Cluster.STRICT_DNS,
        connect_timeout=duration_ms(connect_timeout_ms),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint])],
        ),
    )
    if cluster.type == cluster_pb2.Cluster.STRICT_DNS:
        # "localhost" may resolve to IPv6 first while the server listens on IPv4 (as tracing.py).
        cluster.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
    if remote.tls:
        context = tls_pb2.UpstreamTlsContext(sni=remote.host)
        validation = context.common_tls_context.validation_context
        validation.trusted_ca.filename = SYSTEM_CA_BUNDLE
        if not remote.is_ip:
            # Verify the certificate names the host we asked for, not just that a public CA signed it.
            validation.match_typed_subject_alt_names.add(
                san_type=common_pb2.SubjectAltNameMatcher.DNS).matcher.exact = remote.host
        cluster.transport_socket.CopyFrom(tls_transport_socket(context))
    return cluster
