"""Command-line interface: `controlplane serve | bootstrap | token | ca | validate | status | config |
dashboard` (also `python -m controlplane`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from controlplane import gcpolicy
from controlplane.model.identity import Role, SocketAddress, parse_ports
from controlplane.ops.authz_cli import add_authz_parser, run_authz
from controlplane.security.commands import add_token_parser, parse_duration, run_ca, run_token


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help ends with its default (when it has one)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, (), argparse.SUPPRESS) or action.required:
            return action.help
        return super()._get_help_string(action)


def _address(text: str) -> SocketAddress:
    try:
        return SocketAddress.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _admin(text: str) -> str:
    from controlplane.ops.inspect import admin_address

    try:
        return admin_address(text)
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
    from controlplane import __version__

    parser = argparse.ArgumentParser(prog="controlplane", description=__doc__, formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"controlplane {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", formatter_class=_Help, help="serve xDS to Envoy proxies from a policy directory")
    serve.add_argument("--config", required=True, type=Path, help="directory of policy YAML files")
    serve.add_argument("--xds-address", default="127.0.0.1:18000", type=_address,
                       help="where the xDS (ADS, CSDS) gRPC server listens")
    serve.add_argument("--admin-address", default="127.0.0.1:18001", type=_address,
                       help="where the admin HTTP server (health, metrics, /debug) listens")
    serve.add_argument("--max-connection-age", type=float, metavar="SECONDS",
                       help="close xDS connections after this age so proxies rebalance across replicas")
    serve.add_argument("--no-watch", action="store_true",
                       help="do not reload when policy files change (SIGHUP and POST /debug/reload still do)")
    serve.add_argument("--admin-token-file", type=Path, metavar="FILE",
                       help="admin POST endpoints accept 'Authorization: Bearer <contents of FILE>'")
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
    # main() called in-process (tests) must return to its caller
    serve.set_defaults(exit_fast=False)

    boot = commands.add_parser(
        "bootstrap", formatter_class=_Help, help="print an Envoy bootstrap (YAML) for one proxy")
    boot.add_argument("--node-id", required=True, help="the proxy's name in logs and debug endpoints")
    boot.add_argument("--xds-address", required=True, type=_address,
                      help="the control plane's xDS address, e.g. 127.0.0.1:18000")
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
    boot.add_argument("--namespace", default="default", help="the workload's Istio namespace")
    boot.add_argument("--service-account", default="default",
                      help="the workload's service account: its identity")
    boot.add_argument("--token-file", type=Path,
                      help="the proxy's credential (`controlplane token`), presented on the xDS stream")
    boot.add_argument("--xds-ca-file", metavar="PATH",
                      help="like --xds-ca, but Envoy reads the root from PATH when it starts")
    boot.add_argument("--xds-ca", type=Path,
                      help="the mesh root (root-cert.pem of --ca-dir): connect to a --xds-tls server "
                           "over TLS")
    boot.add_argument("--locality", default="", help="region/zone/subzone of this proxy (node.locality)")
    boot.add_argument("--role", choices=[r.value for r in Role], default=Role.SIDECAR.value,
                      help="sidecar or gateway")
    boot.add_argument("--sotw", action="store_true", help="state-of-the-world ADS instead of delta")

    add_token_parser(commands)
    add_authz_parser(commands)

    validate = commands.add_parser("validate", formatter_class=_Help,
                                   help="check policy like istioctl analyze; exit 1 on errors")
    validate.add_argument("config", help="a policy file, a directory, or - for stdin")
    validate.add_argument("--fail-on", choices=["error", "warning", "info"], default="error",
                          help="lowest severity that makes the exit status 1")
    validate.add_argument("-o", "--output", choices=["text", "json"], default="text",
                          help="text, or json for tools")

    status = commands.add_parser(
        "status", formatter_class=_Help, help="sync status of every connected proxy (SYNCED/STALE/NACKED)",
        epilog="exit codes with --wait: 0 every proxy ACKed the latest edit, 1 timeout, 2 the policy has "
               "errors (the latest edit is not served; they are printed), 3 the control plane is "
               "unreachable")
    status.add_argument("--admin-address", type=_admin,
                        help="the control plane's admin API: HOST:PORT or http://HOST:PORT (default: "
                        "$CONTROLPLANE_ADMIN_ADDRESS, else the one in ./run/logs/mesh.json of a running "
                        "`make run`, else 127.0.0.1:18001)")
    status.add_argument("--wait", action="store_true",
                        help="block until every connected proxy ACKed the current config (see exit codes)")
    status.add_argument("--node", action="append", default=[], metavar="NODE",
                        help="with --wait: also wait until this node is connected (repeatable); a proxy "
                        "that was just started has no stream yet")
    status.add_argument("--timeout", type=float, default=30.0, help="seconds to --wait")
    status.add_argument("--json", action="store_true", help="print /debug/syncz as JSON")

    mesh = commands.add_parser(
        "mesh", formatter_class=_Help, add_help=False,
        help="the local mesh: `controlplane mesh scale SERVICE N` (or run it, as `make run` does)")
    mesh.add_argument("args", nargs=argparse.REMAINDER, help="arguments of python -m controlplane.mesh")

    config = commands.add_parser(
        "config", formatter_class=_Help, help="the resources one proxy gets, with their origins")
    config.add_argument("node", help="node id (`controlplane status` lists them)")
    config.add_argument("type", choices=["clusters", "endpoints", "listeners", "routes", "secrets"],
                        help="which resources")
    config.add_argument("--admin-address", type=_admin,
                        help="the control plane's admin API: HOST:PORT or http://HOST:PORT (default: "
                        "$CONTROLPLANE_ADMIN_ADDRESS, else the one in ./run/logs/mesh.json of a running "
                        "`make run`, else 127.0.0.1:18001)")
    config.add_argument("--json", action="store_true", help="print the Envoy JSON of each resource")

    dashboard = commands.add_parser("dashboard", formatter_class=_Help,
                                    help="open the web console (prints its URL)")
    dashboard.add_argument("--admin-address", default="127.0.0.1:18001", type=_address,
                           help="the control plane's admin server")
    dashboard.add_argument("--no-browser", action="store_true", help="only print the URL")
    return parser


def _serve(args: argparse.Namespace) -> int:
    from controlplane.app import ControlPlane, Settings

    if not args.config.is_dir():
        print(f"controlplane: --config {args.config}: not a directory", file=sys.stderr)
        return 2
    token = None
    if args.admin_token_file is not None:
        try:
            token = args.admin_token_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as err:
            print(f"controlplane: --admin-token-file {args.admin_token_file}: {err}", file=sys.stderr)
            return 2
        if not token:
            print(f"controlplane: --admin-token-file {args.admin_token_file}: empty", file=sys.stderr)
            return 2
    settings = Settings(args.config, str(args.xds_address), str(args.admin_address),
                        watch=not args.no_watch,
                        max_connection_age=args.max_connection_age, ca_dir=args.ca_dir,
                        insecure_xds=args.insecure_xds, xds_tls=args.xds_tls,
                        workload_cert_ttl=args.workload_cert_ttl.total_seconds(),
                        admin_token=token)

    gcpolicy.configure_for_serving()

    async def main() -> None:
        await ControlPlane(settings).run()

    from controlplane.security.ca import CaError

    try:
        asyncio.run(main())
    except CaError as exc:
        print(f"controlplane: mesh CA: {exc}", file=sys.stderr)
        return 2
    if args.exit_fast:
        # Everything is closed and the log flushed; what is left is the interpreter's finalization, where
        # grpc's C core joins its threads (about 1-2 s of an idle server's Ctrl-C). Skip it.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
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
            synced, streams, report = inspect.wait_synced(args.admin_address, args.timeout,
                                                          nodes=args.node)
        else:
            report = inspect.fetch(args.admin_address, "/debug/config")
            streams = inspect.fetch(args.admin_address, "/debug/syncz")
            synced = inspect.all_synced(streams)
    except inspect.AdminError as exc:
        print(f"controlplane: {exc}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(streams, indent=2))
    else:
        inspect.render_policy(report, sys.stdout)
        inspect.render_status(streams, sys.stdout)
    if args.wait and not synced:
        missing = sorted(set(args.node) - {stream["node"] for stream in streams})
        print(f"controlplane: not every proxy ACKed the current config within {args.timeout:g}s"
              + (f" (not connected: {', '.join(missing)})" if missing else ""), file=sys.stderr)
        return 1
    if args.wait and inspect.policy_errors(report):
        # the proxies are SYNCED, but on the last valid config: the latest edit was rejected
        print("controlplane: the policy has errors; the latest edit is not served:", file=sys.stderr)
        for problem in report.get("diagnostics", []):
            print(f"  {problem}", file=sys.stderr)
        return 2
    return 0


def _config(args: argparse.Namespace) -> int:
    from controlplane.ops import inspect

    try:
        nodes = sorted({stream["node"] for stream in inspect.fetch(args.admin_address, "/debug/syncz")})
        if args.node not in nodes:
            print(f"controlplane: no connected proxy with node id {args.node!r}; connected: "
                  f"{', '.join(nodes) or 'none'}", file=sys.stderr)
            return 2
        dump = inspect.fetch(args.admin_address, "/debug/config_dump", {"node": args.node, "type": args.type})
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
    if args.command in ("status", "config") and args.admin_address is None:
        from controlplane.ops.inspect import default_admin_address

        args.admin_address = default_admin_address()
    if argv is None and args.command == "serve":  # the `controlplane` / `python -m controlplane` process
        args.exit_fast = True
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # watchfiles logs every batch of file events at INFO; our reload log line says what matters
    logging.getLogger("watchfiles").setLevel(max(logging.WARNING, logging.getLogger().level))
    if args.command == "mesh":
        from controlplane.mesh.__main__ import main as mesh_main

        return mesh_main(args.args)
    handlers = {"serve": _serve, "bootstrap": _bootstrap, "validate": _validate, "status": _status,
                "config": _config, "token": run_token, "ca": run_ca, "dashboard": _dashboard,
                "authz": run_authz}
    return handlers[args.command](args)
