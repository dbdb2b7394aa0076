"""`controlplane status` / `controlplane config` rendering (controlplane/ops/inspect.py): pure functions of
the admin API's JSON, so these tests build that JSON by hand — the shapes /debug/syncz and
/debug/config_dump return — and read the text tables."""

from __future__ import annotations

import io
from typing import Any

from controlplane.ops.inspect import all_synced, render_config, render_status

V1, V2, V3 = "aaaaaaaa11111111", "bbbbbbbb22222222", "cccccccc33333333"
SNAP, SNAP_NEW = "5a5a5a5a00000000", "6b6b6b6b00000000"
ENVOY_ERROR = "Invalid regex '^/(?>x)': invalid perl operator: (?>"
HEADER = ["NODE", "PROTOCOL", "CLUSTERS", "ENDPOINTS", "LISTENERS", "ROUTES", "SNAPSHOT", "ENVOY",
          "CONNECTED SINCE"]
ORIGIN = "VirtualService/default/svc-a (config/routes.yaml:12)"


def _type(
    state: str, sent: str, acked: str, *, nacked: str = "", error: str = "", origins: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "state": state,
        "sent_version": sent,
        "sent_nonce": "1-2",
        "sent_at": 1.0,
        "responses": 1,
        "acked_version": acked,
        "acked_at": 2.0 if acked else None,
        "nacked_version": nacked,
        "nack_error": error,
        "nack_origins": list(origins),
        "nacked_resources": [],
    }


def _stream(
    node: str, protocol: str, types: dict[str, dict[str, Any]], *, current: str = SNAP
) -> dict[str, Any]:
    return {
        "stream": 1,
        "node": node,
        "proxy": "sidecar/default[]@127.0.0.1:15001",
        "protocol": protocol,
        "connected_at": 0.0,
        "snapshot_version": SNAP,
        "current_snapshot_version": current,
        "synced": all(t["state"] == "SYNCED" for t in types.values()),
        "types": types,
    }


def _synced() -> dict[str, dict[str, Any]]:
    return {t: _type("SYNCED", V1, V1) for t in ("clusters", "endpoints", "listeners", "routes")}


def _render(streams: list[dict[str, Any]]) -> list[str]:
    out = io.StringIO()
    render_status(streams, out)
    return out.getvalue().splitlines()


def _cells(line: str) -> list[str]:
    """A table row's cells (separated by two or more spaces; a cell such as `SYNCED (aaaaaaaa)` has one)."""
    return [cell for cell in (part.strip() for part in line.split("  ")) if cell]


def test_status_table_synced_stale_nacked() -> None:
    stale = _synced()
    stale["routes"] = _type("STALE", V2, V1)  # sent, not ACKed yet
    nacked = _synced()
    nacked["routes"] = _type("NACKED", V3, V1, nacked=V3, error=ENVOY_ERROR, origins=(ORIGIN,))
    lines = _render(
        [
            _stream("proxy-1", "delta", _synced()),
            _stream("proxy-2", "sotw", stale, current=SNAP_NEW),
            _stream("proxy-3", "delta", nacked),
        ]
    )
    assert _cells(lines[0]) == HEADER
    rows = {_cells(line)[0]: _cells(line) for line in lines[1:4]}
    assert rows["proxy-1"] == ["proxy-1", "delta", *["SYNCED (aaaaaaaa)"] * 4, "5a5a5a5a", "-", "-"]
    # a cell shows the ACKed version (the one the proxy runs), and the current snapshot is the cache's
    assert rows["proxy-2"] == ["proxy-2", "sotw", *["SYNCED (aaaaaaaa)"] * 3, "STALE (aaaaaaaa)", "6b6b6b6b",
                               "-", "-"]
    assert rows["proxy-3"][5] == "NACKED (aaaaaaaa)"
    # columns line up: every cell starts where its header does
    header = lines[0]
    for line in lines[1:4]:
        for title in ("PROTOCOL", "ROUTES", "SNAPSHOT"):
            at = header.index(title)
            assert line[at - 2 : at] == "  " and line[at] != " ", (title, line)
    # the NACK detail: who, what, which version, which policy objects, and Envoy's words verbatim
    detail = lines[4:]
    assert detail == ["", f"proxy-3 rejected routes cccccccc (from {ORIGIN}):", f"  {ENVOY_ERROR}"]


def test_status_nack_without_known_origin_and_several_nacks() -> None:
    first = _synced()
    first["clusters"] = _type("NACKED", V2, V1, nacked=V2, error="cluster c: bad")
    first["routes"] = _type(
        "NACKED",
        V3,
        V1,
        nacked=V3,
        error="route r: bad",
        origins=(ORIGIN, "ServiceEntry/default/svc-a (config/services.yaml:1)"),
    )
    text = "\n".join(_render([_stream("p", "sotw", first)]))
    assert "p rejected clusters bbbbbbbb (from unknown policy):\n  cluster c: bad" in text
    assert (
        f"p rejected routes cccccccc (from {ORIGIN}, ServiceEntry/default/svc-a "
        f"(config/services.yaml:1)):\n  route r: bad"
    ) in text
    # in push order, clusters first
    assert text.index("rejected clusters") < text.index("rejected routes")


def test_status_cells_before_any_ack_and_missing_types() -> None:
    types = {"clusters": _type("STALE", V1, ""), "listeners": _type("STALE", "", "")}
    secrets = _synced()
    secrets["secrets"] = _type("SYNCED", V2, V2)
    lines = _render([_stream("new", "delta", types), _stream("gw", "delta", secrets)])
    assert _cells(lines[0])[-4:-2] == ["SECRETS", "SNAPSHOT"]
    new = _cells(lines[1])
    # sent but not ACKed: the sent version; nothing sent: the bare state; a type never requested: "-"
    assert new[2:7] == ["STALE (aaaaaaaa)", "-", "STALE", "-", "-"]
    assert _cells(lines[2])[6] == "SYNCED (bbbbbbbb)"


def test_status_no_proxies() -> None:
    lines = _render([])
    assert _cells(lines[0]) == HEADER
    assert len(lines) == 1
    assert all_synced([])


def test_all_synced() -> None:
    stale = _synced()
    stale["routes"] = _type("STALE", V2, V1)
    assert all_synced([_stream("a", "delta", _synced())])
    assert not all_synced([_stream("a", "delta", _synced()), _stream("b", "sotw", stale)])


def test_render_config() -> None:
    dump = {
        "node": "proxy-1",
        "proxy": "sidecar/default[]@127.0.0.1:15001",
        "snapshot_version": SNAP,
        "routes": [
            {"name": "outbound_http", "version": V1, "origins": [ORIGIN], "resource": {}},
            {"name": "x", "version": V2, "origins": [], "resource": {}},
        ],
    }
    out = io.StringIO()
    render_config(dump, "routes", out)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"# proxy-1 (sidecar/default[]@127.0.0.1:15001) snapshot {SNAP}: 2 routes"
    assert lines[1] == f"outbound_http  aaaaaaaa  {ORIGIN}"
    assert lines[2] == "x              bbbbbbbb  -"


def test_render_config_empty_type() -> None:
    out = io.StringIO()
    render_config({"node": "n", "proxy": "p", "snapshot_version": SNAP}, "secrets", out)
    assert out.getvalue() == f"# n (p) snapshot {SNAP}: 0 secrets\n"
