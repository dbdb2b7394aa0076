"""Command-line interface: `controlplane serve | bootstrap | token | ca | validate | status | config |
dashboard` (also `python -m controlplane`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from controlplane.build.proxy import Role, SocketAddress, parse_ports
from controlplane.ops.authz_cli import add_authz_parser, run_authz
from controlplane.security.commands import add_token_parser, parse_duration, run_ca, run_token


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
    serve.add_argument("--ca-dir", type=Path,
                       help="the mesh CA's state directory (default: .controlplane-ca beside --config); "
                            "Istio's plug-in CA files (ca-cert.pem, ca-key.pem, root-cert.pem, "
                            "cert-chain.pem) there are used as given")
    serve.add_argument("--workload-cert-ttl", type=parse_duration, default=timedelta(hours=24),
                       help="lifetime of workload certificates (default 24h, as Istio); renewed at half life")
    serve.add_argument("--insecure-xds", action="store_true",
                       help="serve every xDS stream without checking its credential (experiments only)")
    serve.add_argument("--xds-tls", action="store_true",
                       help="TLS on the xDS port with a certificate from the mesh CA "
                            "(bootstrap --xds-ca pins it)")

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
    boot.add_argument("--service-account", default="default",
                      help="the workload's service account: its identity (default: default)")
    boot.add_argument("--token-file", type=Path,
                      help="the proxy's credential (`controlplane token`), presented on the xDS stream")
    boot.add_argument("--xds-ca-file", metavar="PATH",
                      help="like --xds-ca, but Envoy reads the root from PATH when it starts")
    boot.add_argument("--xds-ca", type=Path,
                      help="the mesh root (root-cert.pem of --ca-dir): connect to a --xds-tls server "
                           "over TLS")
    boot.add_argument("--role", choices=[r.value for r in Role], default=Role.SIDECAR.value)
    boot.add_argument("--sotw", action="store_true", help="state-of-the-world ADS instead of delta")

    add_token_parser(commands)
    add_authz_parser(commands)

    validate = commands.add_parser("validate", help="check a policy directory; exit 1 on problems")
    validate.add_argument("config", type=Path)

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

    dashboard = commands.add_parser("dashboard", help="open the web console (prints its URL)")
    dashboard.add_argument("--admin-address", default="127.0.0.1:18001", type=_address)
    dashboard.add_argument("--no-browser", action="store_true", help="only print the URL")
    return parser


def _serve(args: argparse.Namespace) -> int:
    from controlplane.app import ControlPlane, Settings

    if not args.config.is_dir():
        print(f"controlplane: --config {args.config}: not a directory", file=sys.stderr)
        return 2
    settings = Settings(args.config, str(args.xds_address), str(args.admin_address),
                        args.test_extra_resources, watch=not args.no_watch,
                        max_connection_age=args.max_connection_age, ca_dir=args.ca_dir,
                        insecure_xds=args.insecure_xds, xds_tls=args.xds_tls,
                        workload_cert_ttl=args.workload_cert_ttl.total_seconds())

    async def main() -> None:
        await ControlPlane(settings).run()

    from controlplane.security.ca import CaError

    try:
        asyncio.run(main())
    except CaError as exc:
        print(f"controlplane: mesh CA: {exc}", file=sys.stderr)
        return 2
    return 0


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    token = path.read_text().strip()
    if not token or any(c.isspace() for c in token):
        raise SystemExit(f"controlplane: --token-file {path}: expected one token (controlplane token output)")
    return token


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
        service_account=args.service_account,
        role=Role(args.role),
        delta=not args.sotw,
        token=_read_token(args.token_file),
        xds_ca=args.xds_ca.read_bytes() if args.xds_ca is not None else None,
        xds_ca_file=args.xds_ca_file,
    )
    sys.stdout.write(bootstrap_yaml(settings))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from controlplane.api.loader import load_policy_dir

    if not args.config.is_dir():
        print(f"controlplane: {args.config}: not a directory", file=sys.stderr)
        return 2
    policy, diagnostics = load_policy_dir(args.config)
    for diagnostic in diagnostics:
        print(diagnostic)
    if diagnostics:
        return 1
    print(f"{args.config}: {len(policy)} objects, no problems", file=sys.stderr)
    return 0


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


def _dashboard(args: argparse.Namespace) -> int:
    from controlplane.ops.console.dashboard import dashboard

    return dashboard(str(args.admin_address), sys.stdout, sys.stderr, browser=not args.no_browser)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # watchfiles logs every batch of file events at INFO; our reload log line says what matters
    logging.getLogger("watchfiles").setLevel(max(logging.WARNING, logging.getLogger().level))
    handlers = {"serve": _serve, "bootstrap": _bootstrap, "validate": _validate, "status": _status,
                "config": _config, "token": run_token, "ca": run_ca, "dashboard": _dashboard,
                "authz": run_authz}
    return handlers[args.command](args)
