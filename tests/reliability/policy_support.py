"""Shared by the reliability tests: the demo policy as texts, the proxy shapes it serves, and a full
build + translate + snapshot of each shape (the pipeline a running server applies)."""

from __future__ import annotations

from pathlib import Path

from controlplane.api.credentials import credentials_dir, load_credentials
from controlplane.api.loader import load_policy_texts, policy_files
from controlplane.api.policyset import PolicySet
from controlplane.model.identity import ProxyIdentity, Role, SocketAddress
from controlplane.translate.resources import Resources

CONFIG = Path(__file__).resolve().parents[2] / "config"

# The shapes the demo mesh serves: a plain sidecar, a labelled sidecar with an inbound listener, and the
# ingress gateway (RateLimitPolicy and Gateway servers apply to it).
IDENTITIES = (
    ProxyIdentity(outbound_address=SocketAddress("127.0.0.1", 15001)),
    ProxyIdentity(labels=(("app", "maximus-core-service"), ("version", "v1")),
                  inbound_address=SocketAddress("127.0.0.1", 15006), app_ports=(9101,)),
    ProxyIdentity(role=Role.GATEWAY, namespace="istio-system", labels=(("istio", "ingressgateway"),),
                  health_address=SocketAddress("127.0.0.1", 15021)),
)


def demo_texts() -> dict[str, str]:
    """file name (relative to config/) → text, for every policy file of the demo mesh."""
    return {path.relative_to(CONFIG).as_posix(): path.read_text() for path in policy_files(CONFIG)}


def load(texts: dict[str, str]) -> tuple[PolicySet, list[str]]:
    credentials, _ = load_credentials(credentials_dir(CONFIG))
    policy, diagnostics = load_policy_texts(sorted(texts.items()), credentials)
    return policy, [str(d) for d in diagnostics]


def translate_all(policy: PolicySet) -> list[Resources]:
    """Every demo shape's resources through the server's own factory (app.make_factory)."""
    from controlplane.app import make_factory

    factory = make_factory(policy)
    return [factory(identity) for identity in IDENTITIES]
