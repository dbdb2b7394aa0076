"""Translate stage: per-proxy model → Envoy resources (xds-protos messages). One module per resource kind."""
