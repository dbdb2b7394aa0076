"""Rate limits: a gateway's RateLimits → one `envoy.filters.http.local_ratelimit` filter per gateway HTTP
connection manager, plus route metadata that says which per-destination / per-route limit a route counts
against.

How each scope maps onto the filter (https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/local_rate_limit_filter):

- gateway: the filter's default `token_bucket`, consumed by every request
  (`always_consume_default_token_bucket` defaults to true);
- clientIp: a descriptor `[remote_address]` without a value — a wildcard, so Envoy keeps one bucket per
  client address (up to `max_dynamic_descriptors`), fed by a `remote_address` action. Gateways set
  `use_remote_address` with no trusted hops, so the address is the peer's, not a forgeable header;
- destinations / routes: descriptors `[destination=<host>]` / `[route=<ns/vs/name>]`, fed by `metadata`
  actions reading the route's `filter_metadata["controlplane.ratelimit"]`, so every route to a service
  shares that service's bucket. Routes without the key produce no such descriptor (`skip_if_absent`).

Actions are set on the filter (`rate_limits`), not on routes, so route tables carry only metadata. A request
over any applicable limit gets 429 and, like every limited response, `x-ratelimit-limit/remaining/reset`
(`enable_x_ratelimit_headers`). Buckets are per Envoy process and per listener.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl
from envoy.type.metadata.v3 import metadata_pb2
from envoy.type.v3 import percent_pb2, token_bucket_pb2
from google.protobuf import struct_pb2

from controlplane.model.gatewaymodel import GatewayRoute, RateLimits, TokenBucket
from controlplane.translate import names
from controlplane.translate.protos import duration_ms

REMOTE_ADDRESS = "remote_address"
DESTINATION_KEY = "destination"
ROUTE_KEY = "route"
# Client addresses tracked at once for the per-IP limit; beyond that Envoy evicts the least recently used.
MAX_CLIENTS = 10_000


def _bucket(bucket: TokenBucket) -> token_bucket_pb2.TokenBucket:
    # A full bucket refilled every interval: `requests` per unit, and a burst of at most `requests`.
    out = token_bucket_pb2.TokenBucket(
        max_tokens=bucket.requests, fill_interval=duration_ms(bucket.interval_ms)
    )
    out.tokens_per_fill.value = bucket.requests
    return out


def _always() -> base_pb2.RuntimeFractionalPercent:
    return base_pb2.RuntimeFractionalPercent(
        default_value=percent_pb2.FractionalPercent(
            numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED
        )
    )


def _metadata_action(key: str) -> rc.RateLimit:
    action = rc.RateLimit.Action.MetaData(
        descriptor_key=key,
        metadata_key=metadata_pb2.MetadataKey(
            key=names.RATELIMIT_METADATA, path=[metadata_pb2.MetadataKey.PathSegment(key=key)]
        ),
        source=rc.RateLimit.Action.MetaData.ROUTE_ENTRY,
        skip_if_absent=True,
    )
    return rc.RateLimit(actions=[rc.RateLimit.Action(metadata=action)])


def _descriptor(key: str, value: str, bucket: TokenBucket) -> ratelimit_pb2.LocalRateLimitDescriptor:
    entry = ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=value)
    return ratelimit_pb2.LocalRateLimitDescriptor(entries=[entry], token_bucket=_bucket(bucket))


def local_rate_limit(limits: RateLimits) -> lrl.LocalRateLimit:
    out = lrl.LocalRateLimit(
        stat_prefix=names.GATEWAY_RATELIMIT_STAT_PREFIX,
        filter_enabled=_always(),
        filter_enforced=_always(),
        enable_x_ratelimit_headers=ratelimit_pb2.DRAFT_VERSION_03,
    )
    if limits.gateway is not None:
        out.token_bucket.CopyFrom(_bucket(limits.gateway))
    if limits.client_ip is not None:
        out.rate_limits.append(rc.RateLimit(actions=[rc.RateLimit.Action(remote_address={})]))
        # No value: a wildcard entry, one bucket per distinct client address.
        out.descriptors.append(_descriptor(REMOTE_ADDRESS, "", limits.client_ip))
        out.max_dynamic_descriptors.value = MAX_CLIENTS
    if limits.destinations:
        out.rate_limits.append(_metadata_action(DESTINATION_KEY))
        out.descriptors.extend(_descriptor(DESTINATION_KEY, host, b) for host, b in limits.destinations)
    if limits.routes:
        out.rate_limits.append(_metadata_action(ROUTE_KEY))
        out.descriptors.extend(_descriptor(ROUTE_KEY, key, b) for key, b in limits.routes)
    return out


def apply_route_limits(out: rc.Route, route: GatewayRoute) -> None:
    """Tag a route with the limit keys it counts against (read by the filter's metadata actions)."""
    fields = {
        k: v for k, v in ((DESTINATION_KEY, route.destination_limit), (ROUTE_KEY, route.route_limit)) if v
    }
    if not fields:
        return
    value = struct_pb2.Struct()
    value.update(fields)
    out.metadata.filter_metadata[names.RATELIMIT_METADATA].CopyFrom(value)
