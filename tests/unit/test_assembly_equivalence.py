"""The assembled snapshot (model/policywide.py + xds/assembly.py) equals the full rebuild, byte for byte.

Property: for random policies (random ServiceEntries, VirtualServices with sourceLabels, DestinationRules
with workloadSelector and locality settings, Sidecars narrowing visibility, exportTo, on top of the demo
mesh) and random proxy identities (namespace, labels, locality, inbound address), after any sequence of
edits, connects and disconnects, every live shape the cache serves has the same resources (names, versions,
bytes, order), the same snapshot version and the same origins as `build_proxy` → `translate_proxy` →
`Snapshot.build` from scratch. Policy is loaded through the policy store from a directory, and each
generation's PolicyWide and translation are handed the previous ones, as the server's reload does, so what
is carried across generations (model/carry.py: unchanged objects are the same instances; xds/assembly.py:
parts by model value) is compared too. Besides whole new files, edits change one number of one object
(the other objects keep their instances), the mesh-wide PeerAuthentication's mode and the MeshConfig's
connect timeout (the clusters' policy context).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.api.policyset import PolicySet
from controlplane.app import make_factory
from controlplane.isolation import BuildFailures, isolated
from controlplane.model.identity import ProxyIdentity, SocketAddress
from controlplane.model.policywide import PolicyWide
from controlplane.policystore import PolicyStore
from controlplane.translate.resources import PUSH_ORDER
from controlplane.xds.assembly import Assembly, SharedTranslation
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.snapshot import Interner, Snapshot, type_version
from tests.reliability.policy_support import CONFIG, IDENTITIES, demo_texts, load

NAMESPACES = ("default", "shop", "ops")
HOSTS = ("alpha", "beta", "gamma", "delta")
LABELS = {"app": ("web", "api", "db"), "version": ("v1", "v2"), "team": ("red", "blue")}
LOCALITIES = ("", "us-east/a/1", "us-east/b/1", "eu-west/a/1")

VALUES = ("web", "api", "db", "v1", "v2", "red", "blue")
label_sets = st.dictionaries(st.sampled_from(sorted(LABELS)), st.sampled_from(VALUES[:5]),
                             min_size=1, max_size=2)


@st.composite
def service_entry(draw: st.DrawFn, index: int) -> dict[str, Any]:
    host = draw(st.sampled_from(HOSTS))
    spec: dict[str, Any] = {
        "hosts": [f"{host}{index}.example"], "location": "MESH_INTERNAL", "resolution": "STATIC",
        "ports": [{"number": draw(st.sampled_from((80, 8080))), "name": "http", "protocol": "HTTP"}],
        "endpoints": [{"address": f"10.0.{index}.{i + 1}", "locality": draw(st.sampled_from(LOCALITIES[1:])),
                       "labels": {"version": draw(st.sampled_from(("v1", "v2")))}}
                      for i in range(draw(st.integers(1, 3)))],
    }
    for endpoint in spec["endpoints"]:
        if draw(st.booleans()):
            del endpoint["locality"]
    if draw(st.booleans()):
        spec["exportTo"] = [draw(st.sampled_from((".", "*", "shop")))]
    return {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": f"se{index}", "namespace": draw(st.sampled_from(NAMESPACES))}, "spec": spec}


@st.composite
def virtual_service(draw: st.DrawFn, index: int, host: str, namespace: str) -> dict[str, Any]:
    http: list[dict[str, Any]] = []
    if draw(st.booleans()):
        http.append({"match": [{"sourceLabels": draw(label_sets)}],
                     "route": [{"destination": {"host": host}}], "timeout": "3s"})
    destination: dict[str, Any] = {"host": host}
    subset = draw(st.sampled_from((None, "v1", "v2")))  # v2: no rule defines it (a 503 route)
    if subset is not None:
        destination["subset"] = subset
    http.append({"route": [{"destination": destination}], "timeout": f"{draw(st.integers(1, 9))}s",
                 "retries": {"attempts": draw(st.integers(1, 4)), "perTryTimeout": "1s"}})
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": f"vs{index}", "namespace": namespace},
            "spec": {"hosts": [host], "http": http}}


@st.composite
def destination_rule(draw: st.DrawFn, index: int, host: str, namespace: str) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "connectionPool": {"tcp": {"maxConnections": draw(st.integers(1, 100))}},
        "outlierDetection": {"consecutive5xxErrors": draw(st.integers(1, 9)), "interval": "5s"},
    }
    balancer = draw(st.sampled_from(("none", "locality", "hash")))
    if balancer == "locality":
        policy["loadBalancer"] = {"simple": "ROUND_ROBIN", "localityLbSetting": {"enabled": True}}
    elif balancer == "hash":  # routes to the host carry a hash policy
        policy["loadBalancer"] = {"consistentHash": {"httpHeaderName": "x-user"}}
    spec: dict[str, Any] = {"host": host, "trafficPolicy": policy,
                            "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}
    if draw(st.booleans()):
        spec["workloadSelector"] = {"matchLabels": draw(label_sets)}
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": f"dr{index}", "namespace": namespace}, "spec": spec}


@st.composite
def sidecar(draw: st.DrawFn, index: int) -> dict[str, Any]:
    namespace = draw(st.sampled_from(NAMESPACES))
    spec: dict[str, Any] = {"egress": [{"hosts": [f"{draw(st.sampled_from(('./*', '*/*', 'shop/*')))}"]}]}
    if draw(st.booleans()):
        spec["workloadSelector"] = {"labels": draw(label_sets)}
    return {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
            "metadata": {"name": f"sc{index}", "namespace": namespace}, "spec": spec}


@st.composite
def policy_files(draw: st.DrawFn) -> tuple[str, str]:
    """(services: ServiceEntries, DestinationRules and a Sidecar; routes: the VirtualServices), two files,
    so that an edit of one keeps the other's objects (VirtualServices whose destinations change)."""
    services: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    for index in range(draw(st.integers(1, 5))):
        entry = draw(service_entry(index))
        services.append(entry)
        host, namespace = entry["spec"]["hosts"][0], entry["metadata"]["namespace"]
        if draw(st.booleans()):
            routes.append(draw(virtual_service(index, host, namespace)))
        if draw(st.booleans()):
            services.append(draw(destination_rule(index, host, namespace)))
    if draw(st.booleans()):
        services.append(draw(sidecar(0)))
    return yaml.safe_dump_all(services), yaml.safe_dump_all(routes)


@st.composite
def identity(draw: st.DrawFn) -> ProxyIdentity:
    labels = draw(st.dictionaries(st.sampled_from(sorted(LABELS)), st.sampled_from(VALUES), max_size=3))
    inbound = draw(st.booleans())
    return ProxyIdentity(
        namespace=draw(st.sampled_from(NAMESPACES)), labels=tuple(sorted(labels.items())),
        outbound_address=SocketAddress("127.0.0.1", draw(st.integers(15001, 15003))),
        inbound_address=SocketAddress("127.0.0.1", 15006) if inbound else None,
        app_ports=(draw(st.sampled_from((9101, 9102))),) if inbound else (),
        locality=draw(st.sampled_from(LOCALITIES)),
    )


steps = st.lists(st.one_of(
    st.tuples(st.just("edit"), st.tuples(st.sampled_from(("both", "services", "routes")), policy_files())),
    st.tuples(st.just("edit"), st.tuples(st.sampled_from(("services", "routes")), policy_files())),
    st.tuples(st.just("tweak"), st.integers(0, 200)),
    st.tuples(st.just("mtls"), st.sampled_from(("STRICT", "PERMISSIVE", "DISABLE"))),
    st.tuples(st.just("connect-timeout"), st.sampled_from(("10s", "3s"))),
    st.tuples(st.just("connect"), st.one_of(identity(), st.sampled_from(IDENTITIES))),
    st.tuples(st.just("disconnect"), st.integers(0, 50)),
), min_size=1, max_size=8)


def reference(policy: PolicySet, proxy: ProxyIdentity) -> Snapshot:
    """The full rebuild from scratch, with a fresh interner."""
    return Snapshot.build(isolated(policy, proxy, BuildFailures()), Interner())


def assert_same(served: Snapshot, expected: Snapshot) -> None:
    assert served.version == expected.version
    for type_url in PUSH_ORDER:
        got, want = served.of_type(type_url), expected.of_type(type_url)
        assert list(got) == list(want)
        assert [(r.version, r.any_payload) for r in got.values()] == [
            (r.version, r.any_payload) for r in want.values()]
        assert served.sotw_body(type_url, None).version == expected.sotw_body(type_url, None).version
        assert served.type_version_of(type_url) == expected.type_version_of(type_url) == type_version(
            want.values())
    assert dict(served.origins) == dict(expected.origins)
    assert dict(served.eds_names) == dict(expected.eds_names)
    assert dict(served.rds_names) == dict(expected.rds_names)
    assert served.consistency_errors() == expected.consistency_errors()
    assert served.required_types() == expected.required_types()  # what `status --wait` waits for


DEMO = demo_texts()
assembled_shapes = [0]
NUMBERS = re.compile(r"((?:timeout|maxConnections|consecutive5xxErrors|attempts): )(\d+)")


def tweaked(texts: dict[str, str], index: int) -> dict[str, str]:
    """`texts` with one number of one object changed (the index-th such number over all files)."""
    found = [(name, match) for name, text in sorted(texts.items()) for match in NUMBERS.finditer(text)]
    name, match = found[index % len(found)]
    text = texts[name]
    bumped = f"{match.group(1)}{int(match.group(2)) % 9 + 1}"
    return {**texts, name: text[:match.start()] + bumped + text[match.end():]}


def replaced(texts: dict[str, str], name: str, pattern: str, value: str) -> dict[str, str]:
    text, count = re.subn(pattern, rf"\g<1>{value}", texts[name], count=1)
    assert count == 1, (name, pattern)
    return {**texts, name: text}


class Directory:
    """A policy directory (with the demo's credentials) read through the server's policy store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.copytree(CONFIG / "credentials", root / "credentials")
        self.store = PolicyStore(root)
        self.texts: dict[str, str] = {}

    def load(self, texts: dict[str, str]) -> PolicySet:
        for name, text in texts.items():
            if self.texts.get(name) != text:
                (self.root / name).parent.mkdir(parents=True, exist_ok=True)
                (self.root / name).write_text(text)
        self.texts = dict(texts)
        return self.store.load().policy


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(steps)
def test_assembled_snapshots_equal_the_full_rebuild(sequence: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as temp:
        check_sequence(Directory(Path(temp)), sequence)


def check_sequence(directory: Directory, sequence: list[tuple[str, Any]]) -> None:
    texts = dict(DEMO)
    policy = directory.load(texts)
    wide, translation = PolicyWide(policy), SharedTranslation()
    cache = SnapshotCache(make_factory(policy, stage=(wide, translation)))
    watches = [cache.watch(IDENTITIES[1])]  # a shape from the start, so every edit is compared
    for step, value in sequence:
        if step in ("edit", "tweak", "mtls", "connect-timeout"):
            if step == "edit":
                which, (services, routes) = value
                if which != "routes":
                    texts = {**texts, "generated-services.yaml": services}
                if which != "services":
                    texts = {**texts, "generated-routes.yaml": routes}
            elif step == "tweak":
                texts = tweaked(texts, value)
            elif step == "mtls":
                texts = replaced(texts, "security.yaml", r"(mtls:\s+mode: )\w+", value)
            else:
                texts = replaced(texts, "mesh.yaml", r"(connectTimeout: )\w+", value)
            policy = directory.load(texts)
            # as ControlPlane._reload: the previous generation lends what it can
            wide, translation = PolicyWide(policy, wide), SharedTranslation(translation)
            cache.set_factory(make_factory(policy, stage=(wide, translation)))
        elif step == "connect":
            watches.append(cache.watch(value))
        elif watches:
            watches.pop(value % len(watches)).cancel()
        for proxy, (snapshot, _streams) in cache.shapes().items():
            assert_same(snapshot, reference(policy, proxy))
    factory = make_factory(policy)
    assembled_shapes[0] += sum(isinstance(factory(w.identity), Assembly) for w in watches)


def test_the_fast_path_is_what_was_compared() -> None:
    """Guards the property above against comparing the reference with itself (run after it)."""
    policy, _ = load(DEMO)
    factory = make_factory(policy)
    assert isinstance(factory(IDENTITIES[0]), Assembly) and isinstance(factory(IDENTITIES[1]), Assembly)
    assert assembled_shapes[0] > 0
