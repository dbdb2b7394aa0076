"""Sidecar (networking.istio.io): what a sidecar sees — which services it can reach, and its outbound policy.

Mirrors istio/api `networking/v1/sidecar.proto`. Supported: `workloadSelector`, `egress[].hosts`
(`namespace/dnsName` visibility, see `EgressHost`) and `outboundTrafficPolicy.mode`. Which Sidecar
applies to a proxy follows Istio: the one in the proxy's namespace whose `workloadSelector` matches its
labels, else the namespace's Sidecar without selector, else the one without selector in the mesh's root
namespace (MeshConfig `rootNamespace`); none: every service is visible (`select_sidecar`).

Not supported, each with the reason: `ingress` listeners (a proxy's inbound listener comes from its
bootstrap, `--inbound-address` / `--app-ports`), egress `port` / `bind` / `captureMode` (per-port egress
listeners bind where captured traffic arrives; our apps use the one outbound HTTP proxy),
`inboundConnectionPool` and `outboundTrafficPolicy.egressProxy`.
See https://istio.io/latest/docs/reference/config/networking/sidecar/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field

from controlplane.api.common import WorkloadSelector, labels_match
from controlplane.api.hosts import expand_reference, fqdn
from controlplane.api.meta import IstioModel, PolicyObject, Problem

_NAMESPACE = re.compile(r"\*|\.|~|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_LABEL = r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?"
_DNS_NAME = re.compile(rf"\*|(\*\.)?{_LABEL}(\.{_LABEL})*")


def _check_egress_host(value: str) -> str:
    text = value[1:] if value.startswith("~") and "/" in value[1:] and not value.startswith("~/") else value
    namespace, sep, name = text.partition("/")
    if not sep or not _NAMESPACE.fullmatch(namespace) or not _DNS_NAME.fullmatch(name):
        raise ValueError(
            f"invalid host {value!r}: expected namespace/dnsName (namespace '*', '.', '~' or a name; "
            "dnsName '*', '*.suffix' or a FQDN), optionally with a leading '~' to exclude"
        )
    return value


EgressHostText = Annotated[str, AfterValidator(_check_egress_host)]


@dataclass(frozen=True)
class EgressHost:
    """One `egress.hosts` entry: `ns/name` imports services of namespace `ns` (`*` any, `.` the Sidecar's
    own, `~` none) matching `name` (`*`, `*.suffix` or a host); a leading `~` (as in `~ns/name`)
    excludes what it matches."""

    namespace: str
    name: str
    exclude: bool

    @classmethod
    def parse(cls, value: str, sidecar_namespace: str) -> EgressHost:
        exclude = value.startswith("~") and not value.startswith("~/")
        namespace, _, name = (value[1:] if exclude else value).partition("/")
        return cls(sidecar_namespace if namespace == "." else namespace, name, exclude)

    def matches(self, host: str, namespace: str) -> bool:
        if self.namespace == "~" or self.namespace not in ("*", namespace):
            return False
        if self.name == "*":
            return True
        names = {host, fqdn(host, namespace) or host}
        if self.name.startswith("*."):
            return any(n.endswith(self.name[1:]) for n in names)
        return self.name in names or expand_reference(self.name, namespace) in names


class IstioEgressListener(IstioModel):
    hosts: tuple[EgressHostText, ...] = Field(min_length=1)
    # Reported by `Sidecar.check` with the reason (kept as fields so that the message is precise).
    port: dict[str, Any] | None = None
    bind: str | None = None
    capture_mode: str | None = None


class OutboundTrafficPolicy(IstioModel):
    mode: Literal["ALLOW_ANY", "REGISTRY_ONLY"] = "ALLOW_ANY"
    egress_proxy: dict[str, Any] | None = None


class SidecarSpec(IstioModel):
    workload_selector: WorkloadSelector | None = None
    egress: tuple[IstioEgressListener, ...] = ()
    outbound_traffic_policy: OutboundTrafficPolicy | None = None
    ingress: tuple[dict[str, Any], ...] = ()
    inbound_connection_pool: dict[str, Any] | None = None


class Sidecar(PolicyObject):
    KIND: ClassVar[str] = "Sidecar"

    kind: Literal["Sidecar"]
    spec: SidecarSpec

    def check(self) -> Iterator[Problem]:
        spec = self.spec
        if spec.ingress:
            yield Problem(("spec", "ingress"), "unsupported field: a proxy's inbound listener comes from its "
                          "bootstrap (--inbound-address, --app-ports), not from a Sidecar")
        if spec.inbound_connection_pool is not None:
            yield Problem(("spec", "inboundConnectionPool"), "unsupported field")
        if spec.outbound_traffic_policy is not None and spec.outbound_traffic_policy.egress_proxy is not None:
            yield Problem(("spec", "outboundTrafficPolicy", "egressProxy"), "unsupported field")
        for index, listener in enumerate(spec.egress):
            for name in ("port", "bind", "captureMode"):
                if getattr(listener, "capture_mode" if name == "captureMode" else name) is not None:
                    yield Problem(
                        ("spec", "egress", index, name),
                        "unsupported field: per-port egress listeners bind where captured traffic arrives; "
                        "without traffic capture apps use the one outbound HTTP proxy",
                    )
        if len(spec.egress) > 1:
            # Several listeners only differ by port, which is not supported (above).
            message = "several egress listeners (they differ by port) are not supported; use one"
            yield Problem(("spec", "egress", 1), message)

    def egress_hosts(self) -> list[EgressHost]:
        return [EgressHost.parse(h, self.metadata.namespace) for e in self.spec.egress for h in e.hosts]

    def visible(self, host: str, namespace: str) -> bool:
        """Whether a service `host` declared in `namespace` is visible to the proxies of this Sidecar."""
        if not self.spec.egress:
            return True
        entries = self.egress_hosts()
        included = any(e.matches(host, namespace) for e in entries if not e.exclude)
        return included and not any(e.matches(host, namespace) for e in entries if e.exclude)


def select_sidecar(
    sidecars: Sequence[Sidecar], namespace: str, labels: dict[str, str], root_namespace: str
) -> Sidecar | None:
    """The Sidecar that applies to a proxy (see the module docstring); sorted input, first wins."""
    own = [s for s in sidecars if s.metadata.namespace == namespace]
    for sidecar in own:
        selector = sidecar.spec.workload_selector
        if selector is not None and labels_match(selector.labels, labels):
            return sidecar
    for candidates in (own, [s for s in sidecars if s.metadata.namespace == root_namespace]):
        for sidecar in candidates:
            if sidecar.spec.workload_selector is None:
                return sidecar
    return None
