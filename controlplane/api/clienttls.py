"""DestinationRule `tls` (istio/api ClientTLSSettings): how a proxy talks TLS to a service's endpoints.

Modes: DISABLE (plaintext, even toward sidecars), SIMPLE (TLS, verify the server), MUTUAL (TLS with a client
certificate from `credentialName` files, as gateways read them: `credentials/<name>/tls.crt|tls.key|ca.crt`),
ISTIO_MUTUAL (the mesh's own certificates: the workload's `default` identity and `ROOTCA`). Without `tls`,
auto mTLS decides per endpoint (model/mtls.py). Supported fields: `mode`, `credentialName`, `sni`,
`subjectAltNames`, `insecureSkipVerify`. The file-path fields (`clientCertificate`, `privateKey`,
`caCertificates`, `caCrl`) are unsupported fields: `credentialName` does the same from the policy
directory, with rotation.
See https://istio.io/latest/docs/reference/config/networking/destination-rule/#ClientTLSSettings.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from controlplane.api.meta import IstioModel

TlsModeName = Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class ClientTLSSettings(IstioModel):
    mode: Annotated[TlsModeName, BeforeValidator(_upper)]
    credential_name: Annotated[str, Field(min_length=1)] | None = None
    sni: Annotated[str, Field(min_length=1)] | None = None
    subject_alt_names: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    insecure_skip_verify: bool | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ClientTLSSettings:
        if self.mode == "MUTUAL" and self.credential_name is None:
            raise ValueError("mode MUTUAL needs credentialName (the client certificate and key)")
        if self.mode in ("DISABLE", "ISTIO_MUTUAL") and self.credential_name is not None:
            raise ValueError(f"credentialName has no meaning with mode {self.mode}")
        if self.mode == "DISABLE" and (self.sni or self.subject_alt_names or self.insecure_skip_verify):
            raise ValueError("sni, subjectAltNames and insecureSkipVerify need a TLS mode")
        if self.insecure_skip_verify and self.subject_alt_names:
            raise ValueError("insecureSkipVerify and subjectAltNames contradict each other")
        return self
