"""Build stage: PolicySet + proxy identity → the per-proxy model (Istio semantics resolved, no Envoy types).

`build_proxy` (defined in `sidecar`) is re-exported here because it is the stage's one entry point.
"""

from controlplane.build.sidecar import build_proxy

__all__ = ["build_proxy"]
