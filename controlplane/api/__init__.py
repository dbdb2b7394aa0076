"""Policy API: Istio kinds as pydantic models, YAML loading with positions, diagnostics and the PolicySet.

Entry point: `controlplane.api.loader.load_policy_dir`. Modules: `documents` (YAML with line numbers),
`meta` (shared base model and envelope), one module per kind (`serviceentry`, `virtualservice`),
`validate` (checks across objects), `policyset` (the result), `diagnostics` (how problems are reported).
"""
