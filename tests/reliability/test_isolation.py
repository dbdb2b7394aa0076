"""Defence in depth: an object that validated but cannot be built is left out of that proxy alone, with a
diagnostic on the object (file:line); the rest of the proxy's configuration is served.

Values are forced past validation (`poke`) to stand for a validation gap. On main, the factory raised and
the cache served the previous snapshot for good (a stalled shape) or, for a new proxy, an empty one."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from controlplane.api.meta import ObjectKey
from controlplane.api.policyset import PolicySet
from controlplane.app import make_factory
from controlplane.isolation import BuildFailures
from controlplane.translate.resources import CLUSTER, LISTENER, ROUTE
from controlplane.xds.cache import SnapshotCache
from tests.reliability.policy_support import IDENTITIES, demo_texts, load

# the route timeout reproduced on main: `timeout: 9223372036854775807s`
TOO_LONG_MS = round(float("9223372036854775807") * 1000)  # as parse_duration_ms made it


def poke(model: Any, path: tuple[str | int, ...], value: object) -> Any:
    """A copy of a frozen pydantic model (or tuple) with the value at `path` replaced, unvalidated."""
    head, *rest = path
    if isinstance(model, tuple):
        assert isinstance(head, int)
        items = list(model)
        items[head] = poke(items[head], tuple(rest), value) if rest else value
        return tuple(items)
    assert isinstance(model, BaseModel) and isinstance(head, str)
    inner = poke(getattr(model, head), tuple(rest), value) if rest else value
    return model.model_copy(update={head: inner})


def demo_with(key: ObjectKey, path: tuple[str | int, ...], value: object) -> PolicySet:
    policy, diagnostics = load(demo_texts())
    assert diagnostics == []
    return policy.replace(poke(obj, path, value) if obj.key == key else obj for obj in policy)


def test_unbuildable_route_timeout_leaves_out_its_virtual_service_only() -> None:
    good, _ = load(demo_texts())
    key = ObjectKey("VirtualService", "default", "maximus-core-service")
    bad = demo_with(key, ("spec", "http", 1, "timeout"), TOO_LONG_MS)
    failures = BuildFailures()
    sidecar = IDENTITIES[0]
    resources = make_factory(bad, failures)(sidecar)
    expected = make_factory(good.replace(o for o in good if o.key != key))(sidecar)
    # exactly what serving the policy without that VirtualService gives: nothing else is lost
    for type_url in (CLUSTER, LISTENER, ROUTE):
        assert resources.by_type[type_url] == expected.by_type[type_url]
    assert len(resources.by_type[CLUSTER]) > 5
    [diagnostic] = failures.diagnostics()
    assert (diagnostic.file, diagnostic.kind, diagnostic.name) == ("routes.yaml", key.kind, key.name)
    assert diagnostic.line == good.source(key).line  # type: ignore[union-attr]
    assert "cannot be translated" in diagnostic.message and "left out" in diagnostic.message


def test_unbuildable_rate_limit_keeps_the_gateway_serving() -> None:
    key = ObjectKey("RateLimitPolicy", "istio-system", "ingress")
    bad = demo_with(key, ("spec", "gateway", "requests_per_unit"), 2**64)
    failures = BuildFailures()
    gateway = IDENTITIES[2]
    resources = make_factory(bad, failures)(gateway)
    assert resources.by_type[LISTENER] and resources.by_type[ROUTE] and resources.by_type[CLUSTER]
    assert [(d.kind, d.name) for d in failures.diagnostics()] == [(key.kind, key.name)]


def test_two_unbuildable_objects_are_both_found() -> None:
    first = ObjectKey("VirtualService", "default", "maximus-core-service")
    second = ObjectKey("VirtualService", "default", "maximus-predict")
    bad = demo_with(first, ("spec", "http", 1, "retries", "attempts"), 2**40)
    path = ("spec", "http", 0, "timeout")
    bad = bad.replace(poke(o, path, TOO_LONG_MS) if o.key == second else o for o in bad)
    failures = BuildFailures()
    resources = make_factory(bad, failures)(IDENTITIES[0])
    assert resources.by_type[ROUTE]
    assert sorted((d.kind, d.name) for d in failures.diagnostics()) == [
        (first.kind, first.name), (second.kind, second.name)]


def test_new_proxy_of_a_failing_shape_gets_a_full_snapshot_not_an_empty_one() -> None:
    key = ObjectKey("VirtualService", "default", "maximus-core-service")
    cache = SnapshotCache(make_factory(demo_with(key, ("spec", "http", 1, "timeout"), TOO_LONG_MS)))
    watch = cache.watch(IDENTITIES[0])
    try:
        snapshot = watch.snapshot
        assert snapshot.version != "" and len(snapshot.of_type(CLUSTER)) > 5
    finally:
        watch.cancel()
