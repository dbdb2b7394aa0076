"""The control plane with the NACK test hook:
`python -m tests.e2e.hooked_serve --extra-resources FILE serve …`.

The e2e and console tests must make a real Envoy NACK and then recover, and the server validates every
policy so thoroughly that no policy file makes Envoy reject what it is sent. So this launcher runs the real
`controlplane serve` (same flags, same process shape as `python -m controlplane`) with the resource factory
wrapped: the raw Envoy resources in FILE are appended to every snapshot. FILE holds
{"clusters": [<Envoy JSON>…], "listeners": […], …} and is read again at every reload (a broken file is
logged and counts as empty), so a test writes it and then makes the server reload. The hook lives here, not
in the server, so that production code has no way to serve unvalidated resources.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from controlplane import app, cli
from controlplane.model.identity import ProxyIdentity
from controlplane.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, Resources
from controlplane.xds.assembly import Assembly
from controlplane.xds.cache import ResourceFactory

log = logging.getLogger(__name__)

Extra = tuple[tuple[str, str, Message], ...]

# The file's keys are the short type names; each resource is named by its own name field.
EXTRA_TYPES: dict[str, tuple[str, type[Message], str]] = {
    "clusters": (CLUSTER, cluster_pb2.Cluster, "name"),
    "endpoints": (ENDPOINT, endpoint_pb2.ClusterLoadAssignment, "cluster_name"),
    "listeners": (LISTENER, listener_pb2.Listener, "name"),
    "routes": (ROUTE, route_pb2.RouteConfiguration, "name"),
    "secrets": (SECRET, secret_pb2.Secret, "name"),
}


def load_extra_resources(path: Path) -> Extra:
    """The resources of the hook file, as (type URL, name, message)."""
    data = json.loads(path.read_text())
    out = []
    for short, items in data.items():
        type_url, cls, name_field = EXTRA_TYPES[short]
        for item in items:
            message = json_format.ParseDict(item, cls())
            out.append((type_url, getattr(message, name_field), message))
    return tuple(out)


def with_extra(factory: ResourceFactory, extra: Extra) -> ResourceFactory:
    """`factory`, with `extra` added to every proxy's own resources."""

    def resources_for(identity: ProxyIdentity) -> Resources | Assembly:
        made = factory(identity)
        own = made.own if isinstance(made, Assembly) else made
        for type_url, name, message in extra:
            own.add(type_url, name, message)  # raises on a name the shape already has, as Resources does
        if isinstance(made, Assembly) and made.collisions():
            raise ValueError(f"test hook resources collide with the shared ones: {made.collisions()}")
        return made

    return resources_for


def install(path: Path) -> None:
    """Wrap `app.make_factory` (which ControlPlane looks up at each call) so that every factory it makes
    adds the resources the hook file held at the latest reload; a certificate renewal between reloads keeps
    them, as it keeps the policy."""
    make_factory, reload = app.make_factory, app.ControlPlane.reload
    current: list[Extra] = [()]

    def hooked_make_factory(*args: Any, **kwargs: Any) -> ResourceFactory:
        return with_extra(make_factory(*args, **kwargs), current[0])

    async def hooked_reload(self: app.ControlPlane, changed_at: float | None = None) -> dict[str, Any]:
        try:
            current[0] = load_extra_resources(path)
        except (OSError, ValueError, KeyError, json_format.ParseError) as exc:
            log.error("test hook %s: %s", path, exc)
            current[0] = ()
        return await reload(self, changed_at)

    app.make_factory = hooked_make_factory
    app.ControlPlane.reload = hooked_reload  # type: ignore[method-assign]


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="hooked_serve", description=__doc__)
    parser.add_argument("--extra-resources", type=Path, required=True, metavar="FILE")
    args, rest = parser.parse_known_args(argv)
    install(args.extra_resources)
    # the rest is `controlplane …` exactly as `python -m controlplane` gets it (cli.main reads sys.argv,
    # which also gives it that process's fast exit)
    sys.argv = [sys.argv[0], *rest]
    return cli.main()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
