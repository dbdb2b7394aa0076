"""SDS secrets: a gateway's credentials (certificate files read by the policy store) as Envoy `Secret`s.

Each credential becomes `<credentialName>` (tls_certificate: chain and key) and, when it has a CA bundle,
`<credentialName>-cacert` (validation_context), Istio's names. They travel on the ADS stream like every
other resource and before the listeners that use them (resources.PUSH_ORDER). Gateway certificate file
paths (`serverCertificate`, ...) become secrets that name the files: the gateway's Envoy reads them and
reloads them when they change. The content is inline, so a
secret's version is a hash of the certificate: replacing the files changes the version, Envoy receives the
new secret and uses it for new handshakes — connections already open are untouched, nothing restarts.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from controlplane.model.gatewaymodel import TlsCredential
from controlplane.translate import names


def credential_secrets(credential: TlsCredential) -> list[secret_pb2.Secret]:
    """A credential without a certificate (DestinationRule SIMPLE needs only its CA) gets only the CA."""
    if credential.files is not None:
        return _file_secrets(credential.name, *credential.files)
    out = [] if not credential.cert_chain else [
        secret_pb2.Secret(
            name=names.secret(credential.name),
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_bytes=credential.cert_chain),
                private_key=base_pb2.DataSource(inline_bytes=credential.private_key),
            ),
        )
    ]
    if credential.ca_cert is not None:
        out.append(
            secret_pb2.Secret(
                name=names.ca_secret(credential.name),
                validation_context=common_pb2.CertificateValidationContext(
                    trusted_ca=base_pb2.DataSource(inline_bytes=credential.ca_cert)
                ),
            )
        )
    return out


def _file_secrets(name: str, cert: str | None, key: str | None, ca: str | None) -> list[secret_pb2.Secret]:
    # Envoy reads file data sources of an SDS secret itself and watches their directories: a rotated
    # certificate is used for new handshakes without a push (Istio's gateways do the same with files).
    out = [] if cert is None or key is None else [
        secret_pb2.Secret(
            name=names.secret(name),
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(filename=cert),
                private_key=base_pb2.DataSource(filename=key),
            ),
        )
    ]
    if ca is not None:
        out.append(
            secret_pb2.Secret(
                name=names.ca_secret(name),
                validation_context=common_pb2.CertificateValidationContext(
                    trusted_ca=base_pb2.DataSource(filename=ca)
                ),
            )
        )
    return out
