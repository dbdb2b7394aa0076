"""What `controlplane status` reports beyond the proxy table: the admin address as `make run` prints it,
the policy state line (errors, warnings, whether the latest edit is served), per-type versions, the Envoy
version and connection time of each proxy, and its workload identity when the control plane reports one."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2

from controlplane.api.diagnostics import Diagnostic
from controlplane.api.policyset import PolicySet
from controlplane.cli import main
from controlplane.model.identity import ProxyIdentity
from controlplane.ops.inspect import (
    admin_address,
    default_admin_address,
    policy_errors,
    render_policy,
    render_status,
)
from controlplane.ops.policystate import policy_state
from controlplane.policystore import LoadResult
from controlplane.translate.resources import CLUSTER, ROUTE
from controlplane.xds.status import StatusRegistry
from tests.harness import free_port


@pytest.mark.parametrize("text", ["127.0.0.1:18001", "http://127.0.0.1:18001", "http://127.0.0.1:18001/",
                                  "HTTP://127.0.0.1:18001"])
def test_admin_address_takes_the_url_make_run_prints(text: str) -> None:
    assert admin_address(text) == "127.0.0.1:18001"


@pytest.mark.parametrize("text", ["https://127.0.0.1:18001", "http://127.0.0.1:18001/debug", "127.0.0.1",
                                  "http://127.0.0.1:port"])
def test_admin_address_refuses_what_it_cannot_use(text: str) -> None:
    with pytest.raises(ValueError):
        admin_address(text)


def test_status_with_a_url_reports_an_unreachable_control_plane(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    assert main(["status", "--admin-address", f"http://127.0.0.1:{port}"]) == 3
    err = capsys.readouterr().err
    assert f"cannot reach the control plane's admin API at http://127.0.0.1:{port}/debug/config" in err
    assert "Traceback" not in err


def test_bad_admin_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["status", "--admin-address", "https://127.0.0.1:18001"])
    assert exit_.value.code == 2
    assert "plain http" in capsys.readouterr().err


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("controlplane 0.")


def test_every_flag_has_help() -> None:
    from controlplane.cli import _parser

    parser = _parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))
    assert isinstance(subparsers.choices, dict)
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, (name, action.dest)
            if action.default not in (None, False, ()) and not action.required and action.dest != "help":
                assert "default" in sub.format_help().replace("\n", " "), (name, action.dest)


# --- the policy line -------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class _Warned(Diagnostic):
    """A diagnostic with the severity field the fidelity issue adds."""

    severity: str = "warning"


ERR = Diagnostic("config/routes.yaml", 12, "VirtualService", "core", "spec.http[0].bogus",
                 "unsupported field")
WARN = _Warned("config/rules.yaml", 3, "DestinationRule", "x", "spec.host", "no such service")


def _render_policy(report: dict[str, Any]) -> str:
    out = io.StringIO()
    render_policy(report, out)
    return out.getvalue()


def test_policy_state_counts_errors_and_warnings_and_says_what_is_served() -> None:
    state = policy_state([ERR, WARN], LoadResult(PolicySet(), [ERR, WARN], kept=["config/routes.yaml"]))
    assert (state["errors"], state["warnings"], state["latest_edit_served"]) == (1, 1, False)
    assert state["problems"][0] == {"file": "config/routes.yaml", "line": 12, "severity": "error",
                                    "text": str(ERR)}
    text = _render_policy({"diagnostics": [str(ERR), str(WARN)], **state})
    assert text.splitlines()[0] == (
        "policy: 1 error, 1 warning; served config is NOT the latest edit "
        "(last valid version of config/routes.yaml served)"
    )
    assert f"  error: {ERR}" in text and f"  warning: {WARN}" in text
    assert policy_errors(state) == 1


def test_policy_line_when_clean_and_with_an_older_control_plane() -> None:
    clean = policy_state([WARN], LoadResult(PolicySet(), [WARN]))
    assert clean["latest_edit_served"] and policy_errors(clean) == 0
    assert _render_policy({"diagnostics": [str(WARN)], **clean}).splitlines()[0] == (
        "policy: 0 errors, 1 warning; served config is the latest edit"
    )
    # a report with only `diagnostics` (no severities): every one of them counts as an error
    old = {"diagnostics": [str(ERR), str(ERR)]}
    assert _render_policy(old).startswith("policy: 2 errors, 0 warnings; served config is NOT the latest")
    assert policy_errors(old) == 2
    pending = _render_policy({"diagnostics": [], "reload_pending": True, **clean})
    assert "an edit is waiting to be loaded" in pending.splitlines()[0]


# --- per-type versions, Envoy version, connected since, identity ----------------------------------


def _registry(protocol: str) -> StatusRegistry:
    registry = StatusRegistry()
    node = base_pb2.Node(id="p-1")
    node.user_agent_build_version.version.major_number = 1
    node.user_agent_build_version.version.minor_number = 40
    node.user_agent_build_version.version.patch = 2
    stream = registry.open("p-1", ProxyIdentity(), protocol, node=node)
    stream.connected_at = 1764648661.0  # 2025-12-02T04:11:01Z
    stream.use_snapshot("snap-2", 0.0)
    version = "snap-2" if protocol == "delta" else "type-v"
    for type_url in (CLUSTER, ROUTE):
        stream.sent(type_url, version, "n", 10, "snap-2")
        stream.acked(type_url, version)
    return registry


def test_syncz_reports_envoy_version_connected_since_and_per_type_versions() -> None:
    current = {"clusters": "c1c1c1c1", "routes": "r9r9r9r9"}
    [delta] = _registry("delta").to_json(lambda _: "snap-2", lambda _: current)
    assert delta["envoy_version"] == "1.40.2"
    assert delta["connected_since"] == "2025-12-02T04:11:01+00:00"
    # a delta ACK carries the snapshot version; the type's own version is the snapshot's for that type
    assert {t: s["version"] for t, s in delta["types"].items()} == current
    [sotw] = _registry("sotw").to_json(lambda _: "snap-2", lambda _: current)
    assert {t: s["version"] for t, s in sotw["types"].items()} == {"clusters": "type-v", "routes": "type-v"}
    # a newer snapshot that the proxy has not caught up with: no version claimed for it
    [stale] = _registry("delta").to_json(lambda _: "snap-3", lambda _: current)
    assert {s["state"] for s in stale["types"].values()} == {"STALE"}
    assert {s["version"] for s in stale["types"].values()} == {""}


def test_status_table_shows_type_versions_envoy_and_identity() -> None:
    [stream] = _registry("delta").to_json(lambda _: "snap-2", lambda _: {"clusters": "c1c1c1c1xx",
                                                                          "routes": "r9r9r9r9xx"})
    stream["identity"] = {"spiffe_id": "spiffe://cluster.local/ns/default/sa/p", "cert_serial": "0a1b",
                          "cert_expiry": "2026-12-03T04:00:00Z"}
    out = io.StringIO()
    render_status([stream], out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["NODE", "PROTOCOL", "CLUSTERS", "ROUTES", "SNAPSHOT", "ENVOY", "CONNECTED",
                                "SINCE"]
    assert lines[1].split() == ["p-1", "delta", "SYNCED", "(c1c1c1c1)", "SYNCED", "(r9r9r9r9)", "snap-2",
                                "1.40.2", "2025-12-02", "04:11:01"]
    assert lines[3] == "p-1: spiffe://cluster.local/ns/default/sa/p  cert 0a1b expires 2026-12-03T04:00:00Z"


def test_default_admin_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONTROLPLANE_ADMIN_ADDRESS", raising=False)
    assert default_admin_address() == "127.0.0.1:18001"
    (tmp_path / "run" / "logs").mkdir(parents=True)
    (tmp_path / "run" / "logs" / "mesh.json").write_text(
        json.dumps({"control_plane": {"admin": "http://127.0.0.1:28001"}}))
    assert default_admin_address() == "127.0.0.1:28001"  # the running `make run` of this directory
    monkeypatch.setenv("CONTROLPLANE_ADMIN_ADDRESS", "http://127.0.0.1:38001")
    assert default_admin_address() == "127.0.0.1:38001"


def test_wait_for_a_named_node_waits_until_it_is_connected(monkeypatch: pytest.MonkeyPatch) -> None:
    """`status --wait --node N`: every connected proxy synced is not enough while N has no stream yet
    (an Envoy just started), so the README's `status` right after starting Envoy shows it."""
    from controlplane.ops import inspect

    synced = {"node": "other-1", "synced": True}
    answers = [[synced], [synced], [synced, {"node": "reviews-1", "synced": True}]]
    polls: list[int] = []

    def fetch(_admin: str, path: str) -> object:
        if path == "/debug/config":
            return {"reload_pending": False}
        polls.append(1)
        return answers[min(len(polls), len(answers)) - 1]

    monkeypatch.setattr(inspect, "fetch", fetch)
    done, streams, _ = inspect.wait_synced("127.0.0.1:1", timeout=5, poll=0, nodes=["reviews-1"])
    assert done and len(polls) == 3 and {s["node"] for s in streams} == {"other-1", "reviews-1"}
    polls.clear()
    done, _, _ = inspect.wait_synced("127.0.0.1:1", timeout=5, poll=0)  # without --node: at once
    assert done and len(polls) == 1
    polls.clear()
    answers[:] = [[synced]]
    done, _, _ = inspect.wait_synced("127.0.0.1:1", timeout=0.05, poll=0.01, nodes=["reviews-1"])
    assert not done  # it never connected: a timeout, not success
