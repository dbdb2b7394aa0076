"""A fleet of real Envoy sidecars with distinct identities against one control plane, at N services.

Shared by tests/e2e/test_fleet.py (8 Envoys, N = 200) and bench/real_envoys.py (50 Envoys, N = 1,000):
the policy (one file per service: a ServiceEntry with 2 endpoints, a VirtualService with retries and a
timeout, a DestinationRule with pool and outlier detection), the one-line edit (the timeout of one
route), and what "converged" means for one Envoy: it runs exactly the names and versions the server
serves its node (`/debug/config_dump?node=`), warms no cluster or listener, and its route for the edited
service carries the expected timeout. Talks to the server over HTTP only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.mesh import DUMPED_TYPES, ControlPlane, Envoy
from tests.harness import LOOPBACK, free_port

EDITED = 0


def service_name(index: int) -> str:
    return f"svc-{index:05d}"


def service_yaml(index: int, timeout_s: int = 5) -> str:
    name = service_name(index)
    host = f"{name}.fleet.internal"
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {10_000 + index}}}}}
  - {{address: 127.0.0.2, ports: {{http: {10_000 + index}}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  http:
  - name: api
    match: [{{uri: {{prefix: /{name}/}}}}]
    timeout: {timeout_s}s
    retries: {{attempts: 3, perTryTimeout: 1s, retryOn: "5xx,connect-failure"}}
    route: [{{destination: {{host: {host}, port: {{number: 8080}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {host}
  trafficPolicy:
    connectionPool:
      tcp: {{maxConnections: 100, connectTimeout: 3s}}
      http: {{http1MaxPendingRequests: 50, http2MaxRequests: 200, maxRetries: 5}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
"""


def write_services(config_dir: Path, services: int) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    for index in range(services):
        (config_dir / f"{service_name(index)}.yaml").write_text(service_yaml(index))


def edit_timeout(config_dir: Path, timeout_s: int) -> None:
    """The one-line edit, written atomically (the watcher never sees half a file)."""
    path = config_dir / f"{service_name(EDITED)}.yaml"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(service_yaml(EDITED, timeout_s))
    temporary.replace(path)


@dataclass
class DistinctSidecar(Envoy):
    """An Envoy whose node differs from every other: labels, inbound address, app port, service account."""

    index: int = 0
    inbound_port: int = field(default_factory=free_port)
    app_port: int = field(default_factory=free_port)

    def bootstrap_args(self) -> list[str]:
        return [
            "--labels",
            f"app=workload-{self.index:03d},version=v1",
            "--inbound-address",
            f"{LOOPBACK}:{self.inbound_port}",
            "--app-ports",
            str(self.app_port),
            "--service-account",
            f"sa-{self.index:03d}",
        ]


def edited_timeout(envoy_dump: dict[str, Any]) -> str | None:
    """The timeout of the edited service's route in an Envoy's /config_dump (None: not there)."""
    prefix = f"/{service_name(EDITED)}/"
    for config in envoy_dump["configs"]:
        if not config["@type"].endswith("RoutesConfigDump"):
            continue
        for item in config.get("dynamic_route_configs", []):
            for host in item["route_config"].get("virtual_hosts", []):
                for route in host.get("routes", []):
                    if route.get("match", {}).get("prefix") == prefix:
                        timeout: str | None = route.get("route", {}).get("timeout")
                        return timeout
    return None


def converged(control_plane: ControlPlane, envoy: Envoy, timeout_s: int) -> bool:
    """Envoy runs what the server serves its node, warms nothing, and has the expected route timeout."""
    served = control_plane.config_dump(envoy.node_id)
    dump = envoy.config_dump()
    view = envoy.view()
    for type_name in DUMPED_TYPES:
        want = {r["name"]: r["version"] for r in served.get(type_name, [])}
        if not want or view.resources[type_name] != want:
            return False
    if edited_timeout(dump) != f"{timeout_s}s":
        return False
    return all(value == 0 for value in envoy.warming().values())
