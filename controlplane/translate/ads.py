"""Config sources: how a generated resource tells Envoy to fetch the resources it refers to.

Everything we generate that refers to another dynamic resource (an EDS cluster's endpoints, a listener's
route configuration) fetches it over the same ADS stream the proxy already has, so that the control plane
can order updates across types (https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol#aggregated-discovery-service).
"""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2


def ads_config_source() -> config_source_pb2.ConfigSource:
    """`{ads: {}, resource_api_version: V3}`; the version is explicit so requests carry v3 type URLs."""
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.ApiVersion.V3)
    source.ads.SetInParent()
    return source
