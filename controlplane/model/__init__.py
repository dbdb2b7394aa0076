"""Build stage: PolicySet + proxy identity → the per-proxy model (Istio semantics resolved, no Envoy types).

`build_proxy` (defined in `sidecar`) is the stage's one entry point. It is imported lazily so that light
users of this package (`model.identity`, used by every CLI command) do not load the whole policy API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controlplane.model.sidecar import build_proxy

__all__ = ["build_proxy"]


def __getattr__(name: str) -> Any:
    if name == "build_proxy":
        from controlplane.model.sidecar import build_proxy

        return build_proxy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
