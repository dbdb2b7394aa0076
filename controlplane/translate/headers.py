"""Header manipulation: VirtualService `headers.request/response` set/add/remove → Route header fields.

`set` overwrites (OVERWRITE_IF_EXISTS_OR_ADD), `add` appends (APPEND_IF_EXISTS_OR_ADD), `remove` lists
names; applied by Envoy at the route level, after any per-cluster ones (there are none here).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc

from controlplane.model.routemodel import HeaderOps


def apply_headers(route: rc.Route, request: HeaderOps, response: HeaderOps) -> None:
    route.request_headers_to_add.extend(_to_add(request))
    route.request_headers_to_remove.extend(request.remove)
    route.response_headers_to_add.extend(_to_add(response))
    route.response_headers_to_remove.extend(response.remove)


def _to_add(ops: HeaderOps) -> list[base_pb2.HeaderValueOption]:
    overwrite = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    append = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    return [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value), append_action=action)
        for items, action in ((ops.set, overwrite), (ops.add, append))
        for key, value in items
    ]
