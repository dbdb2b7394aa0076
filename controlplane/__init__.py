"""An Envoy xDS control plane driven by a subset of Istio's API, for docker compose and plain processes."""

__version__ = "0.1.0"
