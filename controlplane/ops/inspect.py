"""`controlplane status` and `controlplane config`: the admin API's sync status and config dumps, as tables.

Like `istioctl proxy-status` / `istioctl proxy-config`, but reading our own admin endpoints.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, TextIO

TYPES = ("clusters", "endpoints", "listeners", "routes", "secrets")


class AdminError(RuntimeError):
    pass


def fetch(admin: str, path: str, query: dict[str, str] | None = None) -> Any:
    url = f"http://{admin}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise AdminError(f"{url}: HTTP {exc.code}: {exc.read().decode(errors='replace').strip()}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise AdminError(f"cannot reach the control plane's admin API at {url}: {exc}") from None


def _cell(state: dict[str, Any] | None) -> str:
    if state is None:
        return "-"
    version = (state.get("acked_version") or state.get("sent_version") or "")[:8]
    return f"{state['state']} ({version})" if version else state["state"]


def render_status(streams: list[dict[str, Any]], out: TextIO) -> None:
    """One row per connected proxy: its state per type, as `istioctl proxy-status` prints."""
    present = [t for t in TYPES if any(t in s["types"] for s in streams)] or list(TYPES[:4])
    header = ["NODE", "PROTOCOL", *[t.upper() for t in present], "SNAPSHOT"]
    rows = [header]
    for stream in streams:
        rows.append([stream["node"], stream["protocol"],
                     *[_cell(stream["types"].get(t)) for t in present],
                     stream["current_snapshot_version"][:8]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write(line.rstrip() + "\n")
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


def wait_synced(admin: str, timeout: float, poll: float = 0.1) -> tuple[bool, list[dict[str, Any]]]:
    """Poll /debug/syncz until every connected proxy ACKed its current config, or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        # a file change whose reload has not run yet would make "synced" describe the old config
        pending = fetch(admin, "/debug/config").get("reload_pending", False)
        streams = fetch(admin, "/debug/syncz")
        if not pending and all_synced(streams):
            return True, streams
        if time.monotonic() >= deadline:
            return False, streams
        time.sleep(poll)


def render_config(dump: dict[str, Any], type_name: str, out: TextIO) -> None:
    """Resource name, version and the policy objects behind it, one line each."""
    items = dump.get(type_name, [])
    out.write(f"# {dump['node']} ({dump['proxy']}) snapshot {dump['snapshot_version']}: "
              f"{len(items)} {type_name}\n")
    width = max([len(item["name"]) for item in items] + [4])
    for item in items:
        origins = ", ".join(item.get("origins") or []) or "-"
        out.write(f"{item['name'].ljust(width)}  {item['version'][:8]}  {origins}\n")
