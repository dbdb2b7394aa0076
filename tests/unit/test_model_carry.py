"""What a policy generation lends the next (model/carry.py), checked on single edits through the policy
store: unchanged services keep their clusters and routes as the same objects, a changed destination
makes the routes that look it up be built again, a change of the policy context rebuilds the clusters,
and routes that read the proxy are never lent. Each model equals the reference build from scratch."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from controlplane.api.policyset import PolicySet
from controlplane.model import build_proxy
from controlplane.model.identity import ProxyIdentity
from controlplane.model.policywide import PolicyWide
from controlplane.model.proxy_model import ProxyModel, VirtualHost
from controlplane.model.routemodel import DirectResponse, Forward
from controlplane.policystore import PolicyStore
from tests.reliability.policy_support import CONFIG, IDENTITIES, demo_texts

SIDECAR = IDENTITIES[1]

SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: books, namespace: default}
spec:
  hosts: [books.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.9.0.1, labels: {version: v1}}
  - {address: 10.9.0.2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: books, namespace: default}
spec:
  host: books.example
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""

ROUTES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: books, namespace: default}
spec:
  hosts: [books.example]
  http:
  - route: [{destination: {host: books.example, subset: v2}}]
    timeout: 3s
"""
# the same with a first entry that applies to proxies labelled app=reviews only
LABELLED = ROUTES.replace("  http:\n", "  http:\n  - match: [{sourceLabels: {app: reviews}}]\n"
                          "    route: [{destination: {host: books.example, subset: v1}}]\n")


class Generations:
    """A policy directory read through the server's store, each generation's PolicyWide handed the last."""

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.copytree(CONFIG / "credentials", root / "credentials")
        self.store = PolicyStore(root)
        self.wide: PolicyWide | None = None
        self.policy: PolicySet | None = None

    def load(self, texts: dict[str, str]) -> PolicyWide:
        for name, text in texts.items():
            path = self.root / name
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
        result = self.store.load()
        assert not [d for d in result.diagnostics if d.is_error]
        self.policy = result.policy
        self.wide = PolicyWide(result.policy, self.wide)
        return self.wide

    def model(self, proxy: ProxyIdentity) -> ProxyModel:
        assert self.wide is not None and self.policy is not None
        model = self.wide.model(proxy)
        assert model == build_proxy(self.policy, proxy)  # the reference, from scratch
        return model


@pytest.fixture
def generations(tmp_path: Path) -> Generations:
    return Generations(tmp_path)


def _texts() -> dict[str, str]:
    return {**demo_texts(), "books-service.yaml": SERVICE, "books-routes.yaml": ROUTES}


def _replaced(texts: dict[str, str], name: str, old: str, new: str) -> dict[str, str]:
    """`texts` with the first `old` in file `name` replaced (which must be there)."""
    assert old in texts[name], (name, old)
    return {**texts, name: texts[name].replace(old, new, 1)}


def _vhost(model: ProxyModel, host: str) -> VirtualHost:
    assert model.outbound_http is not None
    return next(v for v in model.outbound_http.virtual_hosts if v.service.host == host)


def test_an_edit_of_one_route_lends_every_other_service(generations: Generations) -> None:
    texts = _texts()
    generations.load(texts)
    before = generations.model(SIDECAR)
    generations.load(_replaced(texts, "routes.yaml", "timeout: 30s", "timeout: 31s"))
    after = generations.model(SIDECAR)
    # no ServiceEntry, WorkloadEntry or DestinationRule changed: the clusters are lent whole
    assert after.clusters is before.clusters
    books_before, books_after = _vhost(before, "books.example"), _vhost(after, "books.example")
    assert books_after.routes is books_before.routes  # lent: its VirtualService is the same object
    changed = [v.service for v in after.outbound_http.virtual_hosts  # type: ignore[union-attr]
               if v.routes is not _vhost(before, v.service.host).routes]
    assert changed  # the edited VirtualService's routes were built again (and equal the reference)


def test_routes_are_built_again_when_a_destination_they_looked_up_changes(
        generations: Generations) -> None:
    texts = _texts()
    generations.load(texts)
    before = _vhost(generations.model(SIDECAR), "books.example")
    assert isinstance(before.routes[-1].action, Forward)
    # the rule loses subset v2: the VirtualService (another file) is the same object, its route is not
    generations.load(_replaced(texts, "books-service.yaml", "  - {name: v2, labels: {version: v2}}\n", ""))
    after = _vhost(generations.model(SIDECAR), "books.example")
    assert isinstance(after.routes[-1].action, DirectResponse)  # a route to an undefined subset: 503
    # and back: the host's rules are equal to the first generation's again, the routes too
    generations.load(texts)
    again = _vhost(generations.model(SIDECAR), "books.example")
    assert again.routes == before.routes


def test_a_change_of_the_policy_context_rebuilds_the_clusters(generations: Generations) -> None:
    texts = _texts()
    generations.load(texts)
    before = generations.model(SIDECAR)
    generations.load(_replaced(texts, "security.yaml", "mode: STRICT", "mode: PERMISSIVE"))
    after = generations.model(SIDECAR)  # equal to the reference: auto mTLS follows the new mode
    assert not any(a is b for a, b in zip(after.clusters, before.clusters, strict=True))


def test_routes_that_read_the_proxy_are_not_lent(generations: Generations) -> None:
    texts = {**_texts(), "books-routes.yaml": LABELLED}
    assert LABELLED != ROUTES
    generations.load(texts)
    reviews = ProxyIdentity(namespace="default", labels=(("app", "reviews"),))
    other = ProxyIdentity(namespace="default", labels=(("app", "ratings"),))
    first = _vhost(generations.model(reviews), "books.example")
    generations.load(_replaced(texts, "routes.yaml", "timeout: 30s", "timeout: 31s"))
    # models are compared with the reference inside `model`: the sourceLabels match applies to one only
    # (and, a catch-all, ends that proxy's routes)
    assert _subsets(_vhost(generations.model(reviews), "books.example")) == _subsets(first) == ["v1"]
    assert _subsets(_vhost(generations.model(other), "books.example")) == ["v2"]


def _subsets(vhost: VirtualHost) -> list[str]:
    return [route.destination.subset for route in vhost.routes if route.destination is not None]


def test_an_edit_of_one_service_lends_the_others_clusters(generations: Generations) -> None:
    texts = _texts()
    generations.load(texts)
    before = generations.model(SIDECAR)
    generations.load(_replaced(texts, "books-service.yaml", "10.9.0.2", "10.9.0.3"))
    after = generations.model(SIDECAR)
    assert after.clusters is not before.clusters
    kept = [a is b for a, b in zip(after.clusters, before.clusters, strict=True)]
    books = [c.ref.service.host == "books.example" for c in after.clusters]
    assert kept == [not is_books for is_books in books]  # books' clusters (all its subsets) anew, only


KUBERNETES_SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: magazines, namespace: default}
spec:
  ports: [{port: 9080, name: http}]
  selector: {app: magazines}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: magazines-1, namespace: default}
spec: {address: 10.9.1.1, labels: {app: magazines}}
"""


def test_an_edit_of_a_kubernetes_service_is_seen(generations: Generations) -> None:
    """A Kubernetes Service reaches the registry as a ServiceEntry of kind "Service": its edit must not
    be mistaken for an unchanged registry (the models are compared with the reference in `model`)."""
    texts = {**_texts(), "magazines.yaml": KUBERNETES_SERVICE}
    generations.load(texts)
    before = [c.ref.service for c in generations.model(SIDECAR).clusters if "magazines" in c.ref.service.host]
    assert [ref.port for ref in before] == [9080]
    generations.load(_replaced(texts, "magazines.yaml", "port: 9080", "port: 9081"))
    after = [c.ref.service for c in generations.model(SIDECAR).clusters if "magazines" in c.ref.service.host]
    assert [ref.port for ref in after] == [9081]


def test_a_settled_generation_keeps_nothing_of_the_previous_one(generations: Generations) -> None:
    import gc
    import weakref

    texts = _texts()
    generations.load(texts)
    generations.model(SIDECAR)
    assert generations.policy is not None
    first = weakref.ref(generations.policy)
    generations.load(_replaced(texts, "routes.yaml", "timeout: 30s", "timeout: 31s"))
    generations.model(SIDECAR)
    assert generations.wide is not None
    gc.collect()
    assert first() is not None  # lent tables name the first generation's objects until settled
    generations.wide.settle()
    gc.collect()
    assert first() is None


def test_an_unchanged_kubernetes_service_keeps_its_clusters(generations: Generations) -> None:
    """Its ServiceEntry is made once per Service instance (api/kubernetes.py), so an edit elsewhere that
    validates the whole policy again still finds the same service, and lends its clusters."""
    texts = {**_texts(), "magazines.yaml": KUBERNETES_SERVICE}
    generations.load(texts)
    before = [c for c in generations.model(SIDECAR).clusters if "magazines" in c.ref.service.host]
    generations.load(_replaced(texts, "books-service.yaml", "  - {name: v2, labels: {version: v2}}\n", ""))
    after = [c for c in generations.model(SIDECAR).clusters if "magazines" in c.ref.service.host]
    assert before and all(a is b for a, b in zip(after, before, strict=True))
