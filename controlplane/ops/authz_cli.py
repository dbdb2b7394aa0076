"""`controlplane authz NODE ...` and `/debug/authz`: "why 403?" answered without traffic.

The admin endpoint finds the connected proxy by node id, builds its model from the policy in effect
(build_proxy) and runs the pure evaluator (ops/authz.py) on the request the query describes:

    GET /debug/authz?node=ID[&from=SPIFFE_ID|&namespace=NS][&method=GET][&path=/][&header=k=v ...]
                    [&host=H][&port=N][&ip=A]

`from` is the caller's SPIFFE ID (`spiffe://cluster.local/ns/x/sa/y`, or `cluster.local/ns/x/sa/y`);
`namespace` stands for "some workload of that namespace" (service account `default`); neither: a plaintext
caller without identity. `port` defaults to the inbound listener's (sidecars), as Envoy sees it.
The CLI prints the decision and exits 0 for ALLOW, 1 for DENY, 2 when it cannot ask.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports this module for its parser: the policy stack loads only when asked
    from controlplane.api.policyset import PolicySet
    from controlplane.model.authz import Authz
    from controlplane.model.identity import ProxyIdentity
    from controlplane.ops.authz import Request


def add_authz_parser(commands: Any) -> None:
    parser = commands.add_parser("authz", help="would a proxy allow a request? which policy/rule decides")
    parser.add_argument("node", help="node id of a connected proxy")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--from", dest="source", help="caller's SPIFFE ID (omit: plaintext, no identity)")
    who.add_argument("--namespace", help="a caller from this namespace (service account default)")
    parser.add_argument("--method", default="GET", help="the request's method")
    parser.add_argument("--path", default="/", help="the request's path")
    parser.add_argument("--host", default="", help="the request's :authority (default: none)")
    parser.add_argument("--port", type=int, default=0, help="destination port (default: inbound listener)")
    parser.add_argument("--ip", default="127.0.0.1", help="caller's IP address")
    parser.add_argument("--header", action="append", default=[], metavar="K=V",
                        help="a request header (repeat for several)")
    parser.add_argument("--admin-address", default="127.0.0.1:18001", help="the control plane's admin server")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")


def run_authz(args: argparse.Namespace) -> int:
    from controlplane.ops import inspect

    query: list[tuple[str, str]] = [("node", args.node), ("method", args.method), ("path", args.path),
                                    ("host", args.host), ("ip", args.ip)]
    if args.port:
        query.append(("port", str(args.port)))
    if args.source:
        query.append(("from", args.source))
    if args.namespace:
        query.append(("namespace", args.namespace))
    query += [("header", h) for h in args.header]
    import urllib.parse

    try:
        answer = inspect.fetch(str(args.admin_address), "/debug/authz?" + urllib.parse.urlencode(query))
    except inspect.AdminError as exc:
        print(f"controlplane: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        line = f"{answer['decision']}: {answer['reason']}"
        if answer.get("location"):
            line += f" ({answer['location']})"
        print(line)
        for audited in answer.get("audited", []):
            print(f"  audited by {audited}")
    return 0 if answer["decision"] == "ALLOW" else 1


def request_from_query(query: Mapping[str, str], headers: Sequence[str], default_port: int) -> Request:
    from controlplane.ops.authz import Request

    """The request a /debug/authz query describes; raises ValueError with a readable message."""
    peer: str | None = None
    if query.get("from"):
        peer = query["from"]
        if not peer.startswith("spiffe://"):
            peer = "spiffe://" + peer
    elif query.get("namespace"):
        peer = f"spiffe://cluster.local/ns/{query['namespace']}/sa/default"
    pairs = []
    for header in headers:
        name, sep, value = header.partition("=")
        if not sep or not name:
            raise ValueError(f"header {header!r}: expected NAME=VALUE")
        pairs.append((name.lower(), value))
    port_text = query.get("port", "")
    if port_text and not port_text.isdigit():
        raise ValueError(f"port {port_text!r}: expected a number")
    return Request(method=query.get("method", "GET").upper(), path=query.get("path", "/") or "/",
                   host=query.get("host", ""), port=int(port_text) if port_text else default_port,
                   headers=tuple(pairs), peer=peer, source_ip=query.get("ip", "127.0.0.1") or "127.0.0.1")


def proxy_authz(policy: PolicySet, identity: ProxyIdentity) -> tuple[Authz | None, int]:
    from controlplane.model import build_proxy

    """The policies a proxy enforces and its default destination port (inbound listener or 0)."""
    model = build_proxy(policy, identity)
    if model.inbound is not None:
        return model.inbound.authz, model.inbound.address.port
    if model.gateway is not None:
        return model.gateway.authz, 0
    return None, 0


def authz_answer(policy: PolicySet, identity: ProxyIdentity, query: Mapping[str, str],
                 headers: Sequence[str]) -> dict[str, Any]:
    from controlplane.ops.authz import evaluate

    authz, port = proxy_authz(policy, identity)
    request = request_from_query(query, headers, port)
    answer = evaluate(authz, request).as_dict()
    answer["request"] = {"method": request.method, "path": request.path, "peer": request.peer,
                         "port": request.port, "headers": dict(request.headers)}
    return answer
