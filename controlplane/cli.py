"""Command-line interface: `controlplane serve | bootstrap | validate | status | config`
(also `python -m controlplane`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from controlplane.build.proxy import Role, SocketAddress, parse_ports


def _address(text: str) -> SocketAddress:
    try:
        return SocketAddress.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _labels(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected k=v[,k=v...], got {text!r}")
        pairs.append((key.strip(), value.strip()))
    return tuple(sorted(pairs))


def _ports(text: str) -> tuple[int, ...]:
    try:
        return parse_ports(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="controlplane", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve xDS to Envoy proxies from a policy directory")
    serve.add_argument("--config", required=True, type=Path, help="directory of policy YAML files")
    serve.add_argument("--xds-address", default="127.0.0.1:18000", type=_address)
    serve.add_argument("--admin-address", default="127.0.0.1:18001", type=_address)
    serve.add_argument("--max-connection-age", type=float, metavar="SECONDS",
                       help="close xDS connections after this age so proxies rebalance across replicas")
    serve.add_argument("--no-watch", action="store_true",
                       help="do not reload when policy files change (SIGHUP and POST /debug/reload still do)")
    serve.add_argument("--test-extra-resources", type=Path, help=argparse.SUPPRESS)

    boot = commands.add_parser("bootstrap", help="print an Envoy bootstrap (YAML) for one proxy")
    boot.add_argument("--node-id", required=True)
    boot.add_argument("--xds-address", required=True, type=_address)
    boot.add_argument("--admin-address", default="127.0.0.1:15000", type=_address,
                      help="where this Envoy's own admin interface listens")
    boot.add_argument("--outbound-address", type=_address,
                      help="where the sidecar's outbound HTTP listener binds (its apps' HTTP proxy)")
    boot.add_argument("--inbound-address", type=_address,
                      help="where the sidecar's inbound listener binds (traffic for the local app)")
    boot.add_argument("--app-ports", type=_ports, default=(),
                      help="the local app's ports, e.g. 9101 or 9101,9102 (needed with --inbound-address)")
    boot.add_argument("--gateway-bind", metavar="IP",
                      help="gateways: address for Gateway servers without `bind` (default 0.0.0.0)")
    boot.add_argument("--health-address", type=_address,
                      help="gateways: where /healthz/ready is served (Istio: 0.0.0.0:15021; default: none)")
    boot.add_argument("--prometheus-address", type=_address,
                      help="where a listener exposing /stats/prometheus binds (Istio: 0.0.0.0:15090)")
    boot.add_argument("--labels", type=_labels, default=(), help="workload labels, k=v,k=v")
    boot.add_argument("--namespace", default="default")
    boot.add_argument("--locality", default="", help="region/zone/subzone of this proxy (node.locality)")
    boot.add_argument("--role", choices=[r.value for r in Role], default=Role.SIDECAR.value)
    boot.add_argument("--sotw", action="store_true", help="state-of-the-world ADS instead of delta")

    validate = commands.add_parser("validate", help="check policy like istioctl analyze; exit 1 on errors")
    validate.add_argument("config", help="a policy file, a directory, or - for stdin")
    validate.add_argument("--fail-on", choices=["error", "warning", "info"], default="error",
                          help="lowest severity that makes the exit status 1 (default: error)")
    validate.add_argument("-o", "--output", choices=["text", "json"], default="text")

    status = commands.add_parser("status", help="sync status of every connected proxy (SYNCED/STALE/NACKED)")
    status.add_argument("--admin-address", default="127.0.0.1:18001", type=_address)
    status.add_argument("--wait", action="store_true",
                        help="block until every connected proxy ACKed the current config; exit 1 on timeout")
    status.add_argument("--timeout", type=float, default=30.0, help="seconds to --wait (default 30)")
    status.add_argument("--json", action="store_true", help="print /debug/syncz as JSON")

    config = commands.add_parser("config", help="the resources one proxy gets, with their origins")
    config.add_argument("node", help="node id")
    config.add_argument("type", choices=["clusters", "endpoints", "listeners", "routes", "secrets"])
    config.add_argument("--admin-address", default="127.0.0.1:18001", type=_address)
    config.add_argument("--json", action="store_true", help="print the Envoy JSON of each resource")
    return parser


def _serve(args: argparse.Namespace) -> int:
    from controlplane.app import ControlPlane, Settings

    if not args.config.is_dir():
        print(f"controlplane: --config {args.config}: not a directory", file=sys.stderr)
        return 2
    settings = Settings(args.config, str(args.xds_address), str(args.admin_address),
                        args.test_extra_resources, watch=not args.no_watch,
                        max_connection_age=args.max_connection_age)

    async def main() -> None:
        await ControlPlane(settings).run()

    asyncio.run(main())
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    from controlplane.bootstrap import BootstrapSettings, bootstrap_yaml

    if args.inbound_address is not None and not args.app_ports:
        print("controlplane: --inbound-address needs --app-ports", file=sys.stderr)
        return 2
    settings = BootstrapSettings(
        node_id=args.node_id,
        xds_address=args.xds_address,
        admin_address=args.admin_address,
        outbound_address=args.outbound_address,
        inbound_address=args.inbound_address,
        app_ports=args.app_ports,
        health_address=args.health_address,
        gateway_bind=args.gateway_bind,
        prometheus_address=args.prometheus_address,
        labels=args.labels,
        namespace=args.namespace,
        role=Role(args.role),
        delta=not args.sotw,
        locality=args.locality,
    )
    sys.stdout.write(bootstrap_yaml(settings))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from controlplane import validate_command

    return validate_command.main(args.config, args.fail_on, args.output)


def _status(args: argparse.Namespace) -> int:
    from controlplane.ops import inspect

    try:
        if args.wait:
            synced, streams = inspect.wait_synced(str(args.admin_address), args.timeout)
        else:
            streams = inspect.fetch(str(args.admin_address), "/debug/syncz")
            synced = inspect.all_synced(streams)
    except inspect.AdminError as exc:
        print(f"controlplane: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(streams, indent=2))
    else:
        inspect.render_status(streams, sys.stdout)
    if args.wait and not synced:
        print(f"controlplane: not every proxy ACKed the current config within {args.timeout:g}s",
              file=sys.stderr)
        return 1
    return 0


def _config(args: argparse.Namespace) -> int:
    from controlplane.ops import inspect

    try:
        dump = inspect.fetch(str(args.admin_address), "/debug/config_dump",
                             {"node": args.node, "type": args.type})
    except inspect.AdminError as exc:
        print(f"controlplane: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(dump, indent=2))
    else:
        inspect.render_config(dump, args.type, sys.stdout)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # watchfiles logs every batch of file events at INFO; our reload log line says what matters
    logging.getLogger("watchfiles").setLevel(max(logging.WARNING, logging.getLogger().level))
    handlers = {"serve": _serve, "bootstrap": _bootstrap, "validate": _validate, "status": _status,
                "config": _config}
    return handlers[args.command](args)
