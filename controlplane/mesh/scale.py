"""`python -m controlplane.mesh scale SERVICE N` (also `controlplane mesh scale`): run N instances of a
service in the local mesh, live.

Instances are endpoints, and endpoints are policy, so scaling writes policy: WorkloadEntries in
`<config>/scale/<service>.yaml`, copies of the service's first WorkloadEntry (labels and ports) on the next
free loopback addresses (127.0.0.2, 127.0.0.3 ...), annotated as made by this command. The control plane
serves them as endpoints; a running `make run` starts their apps and sidecars (and, scaling down, stops
them only after every Envoy has dropped the endpoint; see live.py). Until a new sidecar is up, requests
that reach it fail to connect and are retried on another instance (the default retry policy avoids hosts
already tried).

The service needs a `workloadSelector` (its endpoints as WorkloadEntries; docs/tour.md shows one): inline
`endpoints` cannot be extended from another file. Scaling never goes below the
WorkloadEntries the policy has of its own.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import yaml

from controlplane.api.loader import load_policy_dir
from controlplane.api.serviceentry import ServiceEntry
from controlplane.api.workloadentry import WorkloadEntry
from controlplane.mesh.plan import _endpoint_port, _selected

SCALE_DIR = "scale"
ANNOTATION = "controlplane.io/made-by"
MADE_BY = "controlplane mesh scale"


class ScaleError(ValueError):
    """The service cannot be scaled; the message says why."""


def _service(entries: list[ServiceEntry], name: str) -> ServiceEntry:
    for entry in entries:
        if entry.metadata.name == name or name in entry.spec.hosts:
            return entry
    known = ", ".join(sorted(e.metadata.name for e in entries if e.spec.resolution == "STATIC"))
    raise ScaleError(f"no ServiceEntry named {name!r} (STATIC ones: {known or 'none'})")


def scale(config_dir: Path, name: str, count: int) -> tuple[Path, list[str]]:
    """Write (or remove) the scale file so that the service has `count` instances; (the file, the names
    of the WorkloadEntries it holds)."""
    if count < 1:
        raise ScaleError("at least one instance (the local mesh has no scale-to-zero)")
    policy, diagnostics = load_policy_dir(config_dir)
    if diagnostics:
        raise ScaleError(f"fix the policy first: {diagnostics[0]}")
    entry = _service(policy.of_kind(ServiceEntry), name)
    selector = entry.spec.workload_selector
    if entry.spec.resolution != "STATIC" or selector is None:
        raise ScaleError(f"{entry.ref} lists its endpoints inline; to scale it, give it a workloadSelector "
                         "and WorkloadEntries (docs/tour.md, \"Scaling a service\")")
    service = entry.metadata.name
    path = config_dir / SCALE_DIR / f"{service}.yaml"
    selected = _selected(policy, entry.metadata.namespace, selector)
    own = [w for w in selected if w.metadata.annotations.get(ANNOTATION) != MADE_BY]
    if not own:
        raise ScaleError(f"{entry.ref} selects no WorkloadEntry of its own to copy")
    if count < len(own):
        raise ScaleError(f"{entry.ref} has {len(own)} WorkloadEntries in the policy; scale adds or removes "
                         f"only the ones it made (at least {len(own)})")
    extra = count - len(own)
    if extra == 0:
        path.unlink(missing_ok=True)
        return path, []
    template = own[0]
    ports = {port.name: _endpoint_port(template.spec, port) for port in entry.spec.ports}
    # a new instance gets a loopback address no other endpoint (nor a service VIP) uses at all
    taken = {w.spec.address for w in policy.of_kind(WorkloadEntry)
             if not (w in selected and w.metadata.annotations.get(ANNOTATION) == MADE_BY)}
    for other in policy.of_kind(ServiceEntry):
        taken |= {e.address for e in other.spec.endpoints} | set(other.spec.addresses)
    documents: list[dict[str, object]] = []
    names: list[str] = []
    host = ipaddress.IPv4Address("127.0.0.2")
    for index in range(1, extra + 1):
        while str(host) in taken:
            host += 1
        names.append(f"{service}-scaled-{index}")
        documents.append({
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {"name": names[-1], "namespace": entry.metadata.namespace,
                         "annotations": {ANNOTATION: MADE_BY}},
            "spec": {"address": str(host), "ports": ports, "labels": dict(template.spec.labels),
                     # the same identity as the template (mTLS peers verify it, docs/security.md)
                     **({"serviceAccount": template.spec.service_account}
                        if template.spec.service_account else {})},
        })
        taken.add(str(host))
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# written by `controlplane mesh scale {service} {count}`: run that again, do not edit\n"
    text = header + yaml.safe_dump_all(documents, sort_keys=False)
    temporary = path.with_suffix(".yaml.tmp")  # an atomic save: the watchers never see half a file
    temporary.write_text(text)
    temporary.rename(path)
    return path, names
