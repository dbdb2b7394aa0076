"""DestinationRule `tls` (istio/api ClientTLSSettings): how a proxy talks TLS to a service's endpoints.

Modes: DISABLE (plaintext, even toward sidecars), SIMPLE (TLS, verify the server), MUTUAL (TLS with a client
certificate from `credentialName` files, as gateways read them: `credentials/<name>/tls.crt|tls.key|ca.crt`,
or from `clientCertificate` / `privateKey` / `caCertificates`, paths on the proxy's own file system),
ISTIO_MUTUAL (the mesh's own certificates: the workload's `default` identity and `ROOTCA`). Without `tls`,
auto mTLS decides per endpoint (model/mtls.py). Supported fields: `mode`, `credentialName`, `sni`,
`subjectAltNames`, `insecureSkipVerify`, and the file paths `clientCertificate`, `privateKey`,
`caCertificates`: as in Istio, files of the proxy's file system, which its Envoy reads and watches (SDS
secrets naming the files, `file_credential`). `caCrl` is an unsupported field.
See https://istio.io/latest/docs/reference/config/networking/destination-rule/#ClientTLSSettings.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from controlplane.api.meta import IstioModel

TlsModeName = Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]


def _check_path(value: str) -> str:
    # `~` separates the paths in the SDS name (Istio's file-cert:<cert>~<key>), so a path cannot hold it.
    if "~" in value:
        raise ValueError(f"unsupported value {value!r}: a certificate path cannot contain '~'")
    return value


FilePath = Annotated[str, Field(min_length=1), AfterValidator(_check_path)]


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


class ClientTLSSettings(IstioModel):
    mode: Annotated[TlsModeName, BeforeValidator(_upper)]
    credential_name: Annotated[str, Field(min_length=1)] | None = None
    sni: Annotated[str, Field(min_length=1)] | None = None
    subject_alt_names: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    insecure_skip_verify: bool | None = None
    client_certificate: FilePath | None = None
    private_key: FilePath | None = None
    ca_certificates: FilePath | None = None

    @property
    def files(self) -> tuple[str | None, str | None, str | None] | None:
        """(client certificate, private key, CA) file paths, or None when no path is set."""
        found = (self.client_certificate, self.private_key, self.ca_certificates)
        return found if any(found) else None

    @property
    def file_credential(self) -> str | None:
        """The SDS name of the files, Istio's `file-cert:<cert>~<key>` (`~<ca>` appended when set) or
        `file-root:<ca>` for a CA alone; None without files."""
        if self.client_certificate and self.private_key:
            name = f"file-cert:{self.client_certificate}~{self.private_key}"
            return f"{name}~{self.ca_certificates}" if self.ca_certificates else name
        return f"file-root:{self.ca_certificates}" if self.ca_certificates else None

    @model_validator(mode="after")
    def _consistent(self) -> ClientTLSSettings:
        if self.files is not None:
            if self.credential_name is not None:
                raise ValueError("set either credentialName or the certificate files, not both")
            if self.mode in ("DISABLE", "ISTIO_MUTUAL"):
                raise ValueError(f"certificate files have no meaning with mode {self.mode}")
            if bool(self.client_certificate) != bool(self.private_key):
                raise ValueError("clientCertificate and privateKey go together")
        if self.mode == "MUTUAL" and self.credential_name is None and self.client_certificate is None:
            raise ValueError("mode MUTUAL needs credentialName or clientCertificate and privateKey")
        if self.mode in ("DISABLE", "ISTIO_MUTUAL") and self.credential_name is not None:
            raise ValueError(f"credentialName has no meaning with mode {self.mode}")
        if self.mode == "DISABLE" and (self.sni or self.subject_alt_names or self.insecure_skip_verify):
            raise ValueError("sni, subjectAltNames and insecureSkipVerify need a TLS mode")
        if self.insecure_skip_verify and self.subject_alt_names:
            raise ValueError("insecureSkipVerify and subjectAltNames contradict each other")
        return self
