"""The N-services policy the benchmarks load: one file per service (`svc-00042.yaml`, as a config
repository would have), each holding the service's ServiceEntry, VirtualService and, when the benchmark
asks for one, DestinationRule.

Each benchmark picks its shape (how many endpoints, whether routes carry a timeout and retries, which
traffic policy) and keeps it: the recorded results in bench/results/ were measured on these exact bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# bench/policy_load.py's DestinationRule: a connection pool and outlier detection, block style
POOL_AND_OUTLIER = """\
    connectionPool:
      tcp:
        maxConnections: 100
      http:
        http1MaxPendingRequests: 64
        maxRequestsPerConnection: 10
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
"""

# bench/scale.py's: the same kinds of limit, flow style, plus a connect timeout and a retry budget
POOL_RETRY_BUDGET_AND_OUTLIER = """\
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 3s}
      http: {http1MaxPendingRequests: 50, http2MaxRequests: 200, maxRetries: 5}
    outlierDetection:
      {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
"""

RETRIES = """\
    retries:
      attempts: 3
      perTryTimeout: 1s
      retryOn: 5xx,connect-failure
"""


def service_name(index: int) -> str:
    return f"svc-{index:05d}"


def service_file(directory: Path, index: int) -> Path:
    return directory / f"{service_name(index)}.yaml"


def _header(kind: str, name: str) -> str:
    """An Istio networking object's first lines, up to `spec:`."""
    return f"""\
apiVersion: networking.istio.io/v1
kind: {kind}
metadata:
  name: {name}
  namespace: default
spec:
"""


def service_entry(name: str, host: str, port: int, endpoints: int) -> str:
    """STATIC endpoints on 127.0.0.1, 127.0.0.2, …, all on `port`."""
    addresses = "".join(f"""\
  - address: 127.0.0.{n + 1}
    ports:
      http: {port}
""" for n in range(endpoints))
    return _header("ServiceEntry", name) + f"""\
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: 8080
    name: http
    protocol: HTTP
  endpoints:
{addresses}"""


def virtual_service(name: str, host: str, timeout: str | None, retries: bool) -> str:
    """One prefix route `/<name>/` to the service, with the optional timeout and retries."""
    resilience = (f"    timeout: {timeout}\n" if timeout is not None else "") + (RETRIES if retries else "")
    return _header("VirtualService", name) + f"""\
  hosts: [{host}]
  http:
  - name: api
    match:
    - uri:
        prefix: /{name}/
{resilience}    route:
    - destination:
        host: {host}
        port:
          number: 8080
"""


def destination_rule(name: str, host: str, traffic_policy: str) -> str:
    """`traffic_policy`: the body of spec.trafficPolicy, indented by four spaces."""
    return _header("DestinationRule", name) + f"""\
  host: {host}
  trafficPolicy:
{traffic_policy}"""


def service_yaml(index: int, *, endpoints: int = 2, timeout: str | None = None, retries: bool = False,
                 traffic_policy: str | None = None, comment: str = "") -> str:
    """Service `index`'s file: its endpoints listen on port 10000 + index; `comment` ends the file (an
    edit that changes no object)."""
    name = service_name(index)
    host = f"{name}.bench.internal"
    documents = [service_entry(name, host, 10_000 + index, endpoints),
                 virtual_service(name, host, timeout, retries)]
    if traffic_policy is not None:
        documents.append(destination_rule(name, host, traffic_policy))
    return "---\n".join(documents) + comment


def write_policy(directory: Path, services: int, service: Callable[[int], str]) -> None:
    """Files for services 0 … services-1, each `service(index)`."""
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(services):
        service_file(directory, index).write_text(service(index))
