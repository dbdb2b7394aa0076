"""The console's data as JSON (served under /debug/...): proxies, policy objects with the reverse of
config_dump, one proxy's configuration with diffs, and the service graph. Pure functions of the running
control plane's state; the console (static/app.js) is only a client of them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from google.protobuf import json_format

from controlplane.api.diagnostics import Diagnostic
from controlplane.api.policyset import PolicySet
from controlplane.model.identity import ProxyIdentity
from controlplane.ops.console.history import ChangeLog
from controlplane.ops.console.redact import redact
from controlplane.translate.resources import CLUSTER, LISTENER, PUSH_ORDER, ROUTE, SHORT_NAMES
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.snapshot import Snapshot
from controlplane.xds.status import StatusRegistry

APPLIED, WARNING, NOT_APPLIED = "applied", "warning", "not applied"
INVALID_KEPT = "invalid (last valid version in effect)"


@runtime_checkable
class ConsoleBackend(Protocol):
    """What the console reads beyond the admin server's backend (app.py's ControlPlane has all of it)."""

    cache: SnapshotCache
    registry: StatusRegistry
    policy: PolicySet
    diagnostics: list[Diagnostic]
    changes: ChangeLog


def proxies(backend: ConsoleBackend) -> list[dict[str, Any]]:
    """/debug/syncz's rows, plus role, namespace and labels (the identity the configuration depends on)."""
    cache, registry = backend.cache, backend.registry
    rows = registry.to_json(lambda identity: cache.snapshot(identity).version,
                            required=lambda identity: cache.snapshot(identity).required_types())
    for row in rows:
        status = registry.streams.get(row["stream"])
        if status is not None:
            identity = status.identity
            row.update(role=identity.role.value, namespace=identity.namespace, labels=identity.label_map)
            # issue 15 adds `envoy_version` to syncz itself; until then, read it off the node here
            if row.get("envoy_version") is None:
                row["envoy_version"] = _envoy_version(status.node)
    return rows


def _envoy_version(node: Any) -> str | None:
    """"1.40.0" from the Node's user_agent_build_version (what Envoy says it is)."""
    if node is None or not node.HasField("user_agent_build_version"):
        return None
    version = node.user_agent_build_version.version
    return f"{version.major_number}.{version.minor_number}.{version.patch}"


def _severity(diagnostic: Diagnostic) -> str:
    """"Error", "Warning" or "Info". Diagnostics without a `severity` (before issue 14) are errors; an
    enum's value is used, not its repr."""
    severity = getattr(diagnostic, "severity", None) or "Error"
    return str(getattr(severity, "value", severity)).capitalize()


def _diagnostic_json(diagnostic: Diagnostic) -> dict[str, Any]:
    # the page shows the severity beside the text: the text without its own severity prefix
    text = str(diagnostic).removeprefix(f"{diagnostic.severity} ")
    return {"text": text, "file": diagnostic.file, "line": diagnostic.line,
            "kind": diagnostic.kind, "name": diagnostic.name, "field": diagnostic.field,
            "message": diagnostic.message, "severity": _severity(diagnostic)}


def _reverse(cache: SnapshotCache) -> tuple[dict[tuple[str, str, str], dict[str, set[str]]],
                                            dict[tuple[str, str, str], set[ProxyIdentity]]]:
    """Per policy object (kind, namespace, name): the resources it became and the shapes that got them."""
    resources: dict[tuple[str, str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    shapes: dict[tuple[str, str, str], set[ProxyIdentity]] = defaultdict(set)
    for identity, (snapshot, _) in cache.shapes().items():
        for (type_url, name), origins in snapshot.origins.items():
            for origin in origins:
                key = (origin.kind, origin.namespace, origin.name)
                resources[key][SHORT_NAMES.get(type_url, type_url)].add(name)
                shapes[key].add(identity)
    return resources, shapes


def policy(backend: ConsoleBackend) -> dict[str, Any]:
    """Every policy object with its state and diagnostics, the proxies it affects and what it became."""
    resources, shapes = _reverse(backend.cache)
    nodes: dict[ProxyIdentity, list[str]] = defaultdict(list)
    for status in backend.registry.streams.values():
        nodes[status.identity].append(status.node_id)
    kept, excluded = set(backend.changes.kept), set(backend.changes.excluded)
    by_object: dict[tuple[str, str, str], list[Diagnostic]] = defaultdict(list)
    for diagnostic in backend.diagnostics:
        by_object[(diagnostic.file, diagnostic.kind, diagnostic.name)].append(diagnostic)
    objects, matched = [], set()
    for obj in backend.policy:
        source = backend.policy.source(obj.key)
        file, line = (source.file, source.line) if source else ("", 0)
        found = by_object.get((file, obj.kind, obj.metadata.name), [])
        matched.add((file, obj.kind, obj.metadata.name))
        key = (obj.kind, obj.metadata.namespace, obj.metadata.name)
        if any(_severity(d) == "Error" for d in found):  # an invalid object is only ever served as it was
            state = INVALID_KEPT
        elif found:
            state = WARNING
        else:
            state = APPLIED
        objects.append({
            "key": str(obj.key), "kind": obj.kind, "namespace": obj.metadata.namespace,
            "name": obj.metadata.name, "file": file, "line": line, "state": state,
            "file_kept": file in kept,
            "diagnostics": [_diagnostic_json(d) for d in found],
            "proxies": sorted(n for identity in shapes.get(key, ()) for n in nodes.get(identity, [])),
            "resources": {t: sorted(names) for t, names in sorted(resources.get(key, {}).items())},
        })
    for (file, kind, name), found in sorted(by_object.items()):
        if (file, kind, name) in matched:
            continue
        # an object that never validated (or a file-level problem: kind and name are "-")
        objects.append({"key": f"{kind}/-/{name}", "kind": kind, "namespace": "-", "name": name, "file": file,
                        "line": min(d.line for d in found), "state": NOT_APPLIED, "file_kept": file in kept,
                        "diagnostics": [_diagnostic_json(d) for d in found], "proxies": [], "resources": {}})
    return {"objects": objects, "kept_last_valid": sorted(kept), "not_applied": sorted(excluded),
            "diagnostics": [_diagnostic_json(d) for d in backend.diagnostics]}


def _resource_json(snapshot: Snapshot, type_url: str, name: str) -> Any:
    resource = snapshot.of_type(type_url)[name]
    return redact(json.loads(json_format.MessageToJson(resource.message)))


def proxy_config(backend: ConsoleBackend, node: str) -> dict[str, Any] | None:
    """One proxy's resources (secrets redacted), each with its origins and, when it changed in the shape's
    last change, its previous version; plus the resources that change removed."""
    streams = backend.registry.by_node(node)
    if not streams:
        return None
    identity = streams[0].identity
    snapshot = backend.cache.snapshot(identity)
    previous = backend.changes.previous.get(identity)
    out: dict[str, Any] = {"node": node, "proxy": identity.describe(), "snapshot_version": snapshot.version,
                           "previous_snapshot_version": previous.version if previous else None}
    for type_url in PUSH_ORDER:
        items = []
        for name, resource in snapshot.of_type(type_url).items():
            item: dict[str, Any] = {
                "name": name, "version": resource.version,
                "origins": [str(o) for o in snapshot.origins_of(type_url, name)],
                "resource": _resource_json(snapshot, type_url, name),
            }
            if previous is not None:
                old = previous.of_type(type_url).get(name)
                if old is None:
                    item["change"] = "added"
                elif old.version != resource.version:
                    item["change"] = "changed"
                    item["previous"] = _resource_json(previous, type_url, name)
            items.append(item)
        removed = sorted(set(previous.of_type(type_url)) - set(snapshot.of_type(type_url))) \
            if previous else []
        out[SHORT_NAMES[type_url]] = items
        out[f"removed_{SHORT_NAMES[type_url]}"] = removed
    return out


def _route_clusters(route_config: Mapping[str, Any]) -> Iterable[str]:
    for host in route_config.get("virtualHosts", []):
        for route in host.get("routes", []):
            action = route.get("route", {})
            if "cluster" in action:
                yield action["cluster"]
            for weighted in action.get("weightedClusters", {}).get("clusters", []):
                yield weighted.get("name", "")


def _tcp_clusters(value: Any) -> Iterable[str]:
    """`cluster` of every tcp_proxy filter inside a listener's JSON."""
    if isinstance(value, dict):
        if value.get("@type", "").endswith("tcp_proxy.v3.TcpProxy") and "cluster" in value:
            yield value["cluster"]
        for item in value.values():
            yield from _tcp_clusters(item)
    elif isinstance(value, list):
        for item in value:
            yield from _tcp_clusters(item)


def _service_of(cluster: str) -> str | None:
    """`outbound|9101||maximus-core-service` → the host; the mesh's own clusters have no service."""
    parts = cluster.split("|")
    return parts[3] if len(parts) == 4 and parts[0] == "outbound" and parts[3] else None


def _services(snapshot: Snapshot) -> set[str]:
    clusters: set[str] = set()
    for resource in snapshot.of_type(ROUTE).values():
        clusters.update(_route_clusters(json.loads(json_format.MessageToJson(resource.message))))
    for resource in snapshot.of_type(LISTENER).values():
        clusters.update(_tcp_clusters(json.loads(json_format.MessageToJson(resource.message))))
    return {s for c in clusters & set(snapshot.of_type(CLUSTER)) if (s := _service_of(c)) is not None}


def graph(backend: ConsoleBackend) -> dict[str, Any]:
    """Who may call whom: an edge from each proxy's workload (its `app` label, else its node id) to every
    service its routes (and TCP listeners) send to."""
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    nodes: dict[str, str] = {}
    targets: dict[ProxyIdentity, set[str]] = {}
    streams = sorted(backend.registry.streams.values(), key=lambda s: s.node_id)
    for status in streams:  # callers first: a workload that is also a service keeps its proxy's role
        nodes.setdefault(status.identity.label_map.get("app") or status.node_id, status.identity.role.value)
    for status in streams:
        identity = status.identity
        source = identity.label_map.get("app") or status.node_id
        if identity not in targets:  # proxies of one shape share their snapshot: read it once
            targets[identity] = _services(backend.cache.snapshot(identity))
        for service in targets[identity] - {source}:
            nodes.setdefault(service, "service")
            edges[(source, service)].add(status.node_id)
    return {"nodes": [{"id": n, "kind": k} for n, k in sorted(nodes.items())],
            "edges": [{"from": a, "to": b, "proxies": sorted(p)} for (a, b), p in sorted(edges.items())]}
