"""Build stage: PolicySet + proxy identity → the per-proxy model (Istio semantics resolved, no Envoy types)."""
