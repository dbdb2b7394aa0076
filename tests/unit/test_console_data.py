"""The web console's data without a browser: secret redaction, the change log (resource diffs, deliveries,
ACK times) and the reverse of config_dump."""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from controlplane.api.diagnostics import Diagnostic
from controlplane.api.loader import load_policy_texts
from controlplane.api.policyset import PolicySet
from controlplane.model.identity import ProxyIdentity
from controlplane.ops.console.history import ChangeLog
from controlplane.ops.console.redact import redact
from controlplane.ops.console.views import _reverse, policy
from controlplane.policystore import LoadResult
from controlplane.translate.resources import CLUSTER, Origin, Resources
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.status import StatusRegistry

KEY = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----\n"


def test_redact_replaces_every_form_of_key_material() -> None:
    resource = {
        "name": "cert",
        "tlsCertificate": {"certificateChain": {"inlineBytes": base64.b64encode(b"not a pem").decode()},
                           "privateKey": {"inlineBytes": base64.b64encode(KEY).decode()}},
        "listener": {"filterChains": [{"transportSocket": {"typedConfig": {"commonTlsContext": {
            "tlsCertificates": [{"privateKey": {"inlineString": KEY.decode()}},
                                {"privateKey": {"filename": "/etc/certs/key.pem"}}]}}}}]},
        "sessionTicketKeys": {"keys": [{"inlineBytes": "c2VjcmV0"}]},
    }
    out = redact(resource)
    text = json.dumps(out)
    assert "PRIVATE KEY" not in text and base64.b64encode(KEY).decode() not in text
    assert out["tlsCertificate"]["privateKey"] == {"redacted": True, "bytes": len(KEY)}
    keys = out["listener"]["filterChains"][0]["transportSocket"]["typedConfig"]["commonTlsContext"]
    assert keys["tlsCertificates"][1]["privateKey"] == {"redacted": True, "filename": "/etc/certs/key.pem"}
    assert out["sessionTicketKeys"]["redacted"] is True
    # a certificate that is not PEM: its size, no summary, no bytes
    assert out["tlsCertificate"]["certificateChain"] == {"certificates": [], "bytes": 9}
    assert resource["tlsCertificate"]["privateKey"]["inlineBytes"]  # the input is left alone


def _cluster(name: str, timeout: int) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC)
    cluster.connect_timeout.FromSeconds(timeout)
    return cluster


def _factory(clusters: dict[str, int]) -> Callable[[ProxyIdentity], Resources]:
    def make(_: ProxyIdentity) -> Resources:
        resources = Resources()
        for name, timeout in clusters.items():
            resources.add(CLUSTER, name, _cluster(name, timeout),
                          (Origin("DestinationRule", "default", name, "rules.yaml", 3),))
        return resources

    return make


def _loaded(*diagnostics: Diagnostic) -> LoadResult:
    return LoadResult(PolicySet(), list(diagnostics), kept=["rules.yaml"] if diagnostics else [])


@pytest.mark.asyncio
async def test_change_log_records_resources_deliveries_and_acks() -> None:
    cache = SnapshotCache(_factory({"a": 1, "b": 1}))
    registry, log = StatusRegistry(), ChangeLog()
    identity = ProxyIdentity()
    watch = cache.watch(identity)
    status = registry.open("node-1", identity, "delta")
    first = watch.snapshot
    status.use_snapshot(first.version, 0.0, initial=True)
    status.sent(CLUSTER, first.version, "1", 0, first.version)
    status.acked(CLUSTER, first.version)

    before = log.before(cache)
    await cache.publish(_factory({"a": 2, "c": 1}))
    change = await log.after(cache, registry, before, [("rules.yaml", 1, 10)], _loaded())
    assert change.files == {"rules.yaml": "added"}
    assert change.resources == {"clusters": {"added": ["c"], "changed": ["a"], "removed": ["b"]}}
    assert [(d.node, d.acked_at) for d in change.deliveries] == [("node-1", None)]
    assert log.previous[identity] is first

    assert not log.observe(registry, cache)  # nothing ACKed yet: still pending
    second = watch.snapshot
    status.use_snapshot(second.version, 0.0)
    status.sent(CLUSTER, second.version, "2", 0, second.version)
    status.acked(CLUSTER, second.version)
    assert log.observe(registry, cache)
    entry = log.to_json()[0]["proxies"][0]
    assert entry["outcome"] == "acked" and entry["ack_seconds"] is not None and entry["ack_seconds"] >= 0

    # an unchanged reload is not recorded; a changed file is, as modified
    await log.after(cache, registry, log.before(cache), [("rules.yaml", 1, 10)], _loaded())
    assert len(log.changes) == 1
    before = log.before(cache)
    await cache.publish(_factory({"a": 3, "c": 1}))
    await log.after(cache, registry, before, [("rules.yaml", 2, 11)], _loaded())
    assert log.changes[-1].files == {"rules.yaml": "modified"}
    registry.close(status)
    assert log.observe(registry, cache)
    assert log.to_json()[0]["proxies"][0]["outcome"] == "disconnected"
    watch.cancel()


@pytest.mark.asyncio
async def test_policy_view_is_the_reverse_of_config_dump() -> None:
    cache = SnapshotCache(_factory({"a": 1, "b": 1}))
    registry, log = StatusRegistry(), ChangeLog()
    watches = [cache.watch(ProxyIdentity(namespace=ns)) for ns in ("one", "two")]
    for index, watch in enumerate(watches):
        registry.open(f"node-{index}", watch.identity, "delta")
    bad = Diagnostic("rules.yaml", 7, "DestinationRule", "never", "spec.host", "unknown host")
    await log.after(cache, registry, log.before(cache), [], _loaded(bad))

    class Backend:
        def __init__(self) -> None:
            self.cache, self.registry, self.changes = cache, registry, log
            self.policy, self.diagnostics = PolicySet(), [bad]

    report = policy(Backend())  # type: ignore[arg-type]
    # the objects behind resources come from the snapshots' origins; the rest from the diagnostics
    not_applied = [o for o in report["objects"] if o["state"] == "not applied"]
    assert [(o["key"], o["line"], o["diagnostics"][0]["severity"]) for o in not_applied] == [
        ("DestinationRule/-/never", 7, "Error")]
    assert report["kept_last_valid"] == ["rules.yaml"]
    resources, shapes = _reverse(cache)
    assert resources[("DestinationRule", "default", "a")] == {"clusters": {"a"}}
    assert shapes[("DestinationRule", "default", "a")] == {w.identity for w in watches}
    for watch in watches:
        watch.cancel()


@dataclass(frozen=True, order=True)
class _Graded(Diagnostic):
    """A diagnostic with the `severity` issue 14 adds (an enum there; a string or enum is read alike)."""

    severity: Any = "Error"


class _Severity(enum.Enum):
    WARNING = "Warning"


ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc-a}
spec:
  hosts: [svc-a.test]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
"""


@pytest.mark.parametrize(("severity", "state"), [
    ("Error", "invalid (last valid version in effect)"),
    (_Severity.WARNING, "warning"),
    (None, "applied"),
])
def test_policy_states_follow_diagnostic_severity(severity: Any, state: str) -> None:
    loaded, problems = load_policy_texts([("services.yaml", ENTRY)])
    assert problems == [] and len(loaded) == 1
    found = [] if severity is None else [
        _Graded("services.yaml", 6, "ServiceEntry", "svc-a", "spec.resolution", "a remark", severity)]

    class Backend:
        def __init__(self) -> None:
            self.cache, self.registry = SnapshotCache(_factory({})), StatusRegistry()
            self.changes = ChangeLog()
            self.policy, self.diagnostics = loaded, found

    objects = policy(Backend())["objects"]  # type: ignore[arg-type]
    assert [(o["key"], o["file"], o["line"], o["state"]) for o in objects] == [
        ("ServiceEntry/default/svc-a", "services.yaml", 1, state)]
    if severity is not None:
        assert objects[0]["diagnostics"][0]["severity"] == ("Error" if severity == "Error" else "Warning")
