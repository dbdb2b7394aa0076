"""`controlplane status` and `controlplane config`: the admin API's sync status and config dumps, as tables.

Like `istioctl proxy-status` / `istioctl proxy-config`, but reading our own admin endpoints.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection
from pathlib import Path
from typing import Any, TextIO

TYPES = ("clusters", "endpoints", "listeners", "routes", "secrets")


class AdminError(RuntimeError):
    pass


def admin_address(text: str) -> str:
    """`--admin-address` as `host:port`, also given as the URL `make run` prints (`http://host:port/`);
    ValueError for anything else."""
    address = text.strip()
    if "://" in address:
        scheme, _, address = address.partition("://")
        if scheme.lower() != "http":
            raise ValueError(f"the admin API speaks plain http, got {text!r}")
        address, _, path = address.partition("/")
        if path.strip("/"):
            raise ValueError(f"expected http://HOST:PORT, got {text!r} (with a path)")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT or http://HOST:PORT, got {text!r}")
    return address


DEFAULT_ADMIN = "127.0.0.1:18001"
MESH_STATE = Path("run/logs/mesh.json")  # what `make run` writes (controlplane/mesh/runner.py)


def default_admin_address() -> str:
    """$CONTROLPLANE_ADMIN_ADDRESS, else the admin address of the local mesh started from this directory
    (`make run` on other ports), else 127.0.0.1:18001."""
    configured = os.environ.get("CONTROLPLANE_ADMIN_ADDRESS")
    if configured:
        return admin_address(configured)
    try:
        return admin_address(json.loads(MESH_STATE.read_text())["control_plane"]["admin"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_ADMIN


def fetch(admin: str, path: str, query: dict[str, str] | None = None) -> Any:
    url = f"http://{admin}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise AdminError(f"{url}: HTTP {exc.code}: {exc.read().decode(errors='replace').strip()}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise AdminError(f"cannot reach the control plane's admin API at {url}: {exc}") from None


def _cell(state: dict[str, Any] | None) -> str:
    if state is None:
        return "-"
    if "version" in state:  # the type's own version (a delta stream's ACKs carry the snapshot's)
        version = state["version"][:8]
    else:
        version = (state.get("acked_version") or state.get("sent_version") or "")[:8]
    return f"{state['state']} ({version})" if version else state["state"]


def _since(stream: dict[str, Any]) -> str:
    """`connected_since` (ISO 8601, UTC) as `2026-12-02 04:11:01`."""
    since = str(stream.get("connected_since") or "-")
    return since.replace("T", " ").removesuffix("+00:00")


def render_status(streams: list[dict[str, Any]], out: TextIO) -> None:
    """One row per connected proxy: its state per type, as `istioctl proxy-status` prints; then each
    proxy's workload identity (once mTLS issues certificates) and every NACK."""
    present = [t for t in TYPES if any(t in s["types"] for s in streams)] or list(TYPES[:4])
    header = ["NODE", "PROTOCOL", *[t.upper() for t in present], "SNAPSHOT", "ENVOY", "CONNECTED SINCE"]
    rows = [header]
    for stream in streams:
        rows.append([stream["node"], stream["protocol"],
                     *[_cell(stream["types"].get(t)) for t in present],
                     stream["current_snapshot_version"][:8], stream.get("envoy_version") or "-",
                     _since(stream)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write(line.rstrip() + "\n")
    identities = [(s["node"], s["identity"]) for s in streams if s.get("identity")]
    if identities:
        out.write("\n")
    for node, identity in identities:
        out.write(f"{node}: {identity.get('spiffe_id', '-')}  cert {identity.get('cert_serial', '-')} "
                  f"expires {identity.get('cert_expiry', '-')}\n")
    for stream in streams:
        for type_name, state in stream["types"].items():
            if state["state"] == "NACKED":
                origins = _summarize(state.get("nack_origins") or []) or "unknown policy"
                out.write(f"\n{stream['node']} rejected {type_name} {state['nacked_version'][:8]} "
                          f"(from {origins}):\n  {state['nack_error']}\n")


MAX_ORIGINS = 5


def _summarize(origins: list[str]) -> str:
    """A rejected route configuration can come from thousands of objects; routing kinds first (they are
    the usual culprits), then a count."""
    ranked = sorted(origins, key=lambda o: (not o.startswith(("VirtualService/", "Gateway/")), o))
    shown = ", ".join(ranked[:MAX_ORIGINS])
    more = len(ranked) - MAX_ORIGINS
    return f"{shown} and {more} more" if more > 0 else shown


def all_synced(streams: list[dict[str, Any]]) -> bool:
    return all(stream["synced"] for stream in streams)


def wait_synced(
    admin: str, timeout: float, poll: float = 0.1, nodes: Collection[str] = ()
) -> tuple[bool, list[dict[str, Any]], dict[str, Any]]:
    """Poll /debug/syncz until every connected proxy ACKed its current config, and each of `nodes` is
    connected (a proxy just started has no stream yet, and "every connected proxy" would not wait for
    it), or `timeout` passes; (synced, the streams, /debug/config as it was then)."""
    deadline = time.monotonic() + timeout
    while True:
        # a file change whose reload has not run yet would make "synced" describe the old config
        report: dict[str, Any] = fetch(admin, "/debug/config")
        streams = fetch(admin, "/debug/syncz")
        connected = {stream["node"] for stream in streams}
        if not report.get("reload_pending", False) and all_synced(streams) \
                and all(node in connected for node in nodes):
            return True, streams, report
        if time.monotonic() >= deadline:
            return False, streams, report
        time.sleep(poll)


def policy_errors(report: dict[str, Any]) -> int:
    """Problems that keep an edit from being served (every diagnostic, unless it says it is a warning)."""
    if "errors" in report:
        return int(report["errors"])
    return len(report.get("diagnostics", []))


def render_policy(report: dict[str, Any], out: TextIO) -> None:
    """The line above the proxy table: the policy's problems (file:line each) and whether the proxies
    are being served the latest edit."""
    problems = report.get("problems")
    if problems is None:  # a control plane without severities: every diagnostic is an error
        problems = [{"severity": "error", "text": d} for d in report.get("diagnostics", [])]
    errors = sum(1 for p in problems if p["severity"] not in ("warning", "info"))
    warnings = sum(1 for p in problems if p["severity"] == "warning")
    if report.get("reload_pending"):
        served = "an edit is waiting to be loaded"
    elif report.get("latest_edit_served", errors == 0):
        served = "served config is the latest edit"
    else:
        kept = report.get("kept_last_valid") or []
        left = report.get("not_applied") or []
        parts = [f"last valid version of {f} served" for f in kept] + [f"{f} not applied" for f in left]
        served = "served config is NOT the latest edit (" + "; ".join(parts or ["edits rejected"]) + ")"
    out.write(f"policy: {_plural(errors, 'error')}, {_plural(warnings, 'warning')}; {served}\n")
    for problem in problems:
        # the text of a warning or info starts with its severity already (api/diagnostics.py)
        text = str(problem["text"]).removeprefix(f"{str(problem['severity']).capitalize()} ")
        out.write(f"  {problem['severity']}: {text}\n")
    out.write("\n")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def render_config(dump: dict[str, Any], type_name: str, out: TextIO) -> None:
    """Resource name, version and the policy objects behind it, one line each."""
    items = dump.get(type_name, [])
    out.write(f"# {dump['node']} ({dump['proxy']}) snapshot {dump['snapshot_version']}: "
              f"{len(items)} {type_name}\n")
    width = max([len(item["name"]) for item in items] + [4])
    for item in items:
        origins = ", ".join(item.get("origins") or []) or "-"
        out.write(f"{item['name'].ljust(width)}  {item['version'][:8]}  {origins}\n")
