"""Credentials: the certificate files a Gateway's `tls.credentialName` names, read from the policy directory.

Istio reads a Kubernetes Secret named by `credentialName`; we read a directory of the same shape:

    <policy dir>/credentials/<credentialName>/tls.crt   certificate chain (PEM), required
    <policy dir>/credentials/<credentialName>/tls.key   its private key (PEM), required
    <policy dir>/credentials/<credentialName>/ca.crt    CA bundle that client certificates must chain to
                                                        (PEM); required by tls mode MUTUAL

When a single policy file is loaded, `credentials/` next to it is used. The files are read here — at the
edge, by the loader and the policy store — and travel through the pure stages as bytes in `PolicySet`; the
translate stage turns them into SDS `Secret` resources (`translate/secrets.py`), so replacing the files
rotates the certificate without restarting Envoy. A credential is usable only when the key matches the
certificate (checked with the `ssl` module, the same OpenSSL-backed check Envoy does), otherwise it is a
diagnostic naming the file, and servers that use it are left out.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from controlplane.api.diagnostics import Diagnostic

CREDENTIALS_DIR = "credentials"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
CA_FILE = "ca.crt"
KIND = "Credential"

# Diagnostics for a credential carry this pseudo-kind; the credential's directory is the object name.
Credentials = Mapping[str, "Credential"]


@dataclass(frozen=True)
class Credential:
    name: str
    cert_chain: bytes
    private_key: bytes
    ca_cert: bytes | None = None
    # Where it was read from, for messages.
    directory: str = ""


def credentials_dir(policy_path: Path) -> Path:
    """Where the credentials of a policy directory (or of a single policy file) live."""
    base = policy_path if policy_path.is_dir() else policy_path.parent
    return base / CREDENTIALS_DIR


def load_credentials(directory: Path) -> tuple[dict[str, Credential], list[Diagnostic]]:
    """Every usable credential under `directory` (sorted by name), and diagnostics for the unusable ones."""
    found: dict[str, Credential] = {}
    diagnostics: list[Diagnostic] = []
    if not directory.is_dir():
        return found, diagnostics
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        credential, problem = load_credential(entry)
        if credential is not None:
            found[credential.name] = credential
        elif problem is not None:
            diagnostics.append(problem)
    return found, diagnostics


def load_credential(directory: Path) -> tuple[Credential | None, Diagnostic | None]:
    name = directory.name
    cert, key, ca = directory / CERT_FILE, directory / KEY_FILE, directory / CA_FILE
    for required in (cert, key):
        if not required.is_file():
            return None, _problem(required, name, "missing file (a credential needs tls.crt and tls.key)")
    try:
        before = (cert.read_bytes(), key.read_bytes(), ca.read_bytes() if ca.is_file() else None)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if before[2] is not None:
            context.load_verify_locations(cafile=ca)
        after = (cert.read_bytes(), key.read_bytes(), ca.read_bytes() if ca.is_file() else None)
    except ssl.SSLError as exc:
        return None, _problem(cert, name, f"unusable certificate, key or CA: {exc.reason or exc}")
    except OSError as exc:
        return None, _problem(cert, name, f"cannot read: {exc.strerror or exc}")
    if before != after:
        # Replaced while we read it (a rotation in progress); the watcher reloads again once it settles.
        return None, _problem(cert, name, "changed while being read")
    return Credential(name, after[0], after[1], after[2], str(directory)), None


def _problem(file: Path, name: str, message: str) -> Diagnostic:
    return Diagnostic(str(file), 1, KIND, name, file.name, message)
