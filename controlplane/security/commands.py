"""The security commands of the CLI: `controlplane token` (a proxy's credential) and
`controlplane ca rotate`."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `24h`, `365d`, or combined `1d12h`; raises argparse.ArgumentTypeError."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 30m, 24h or 365d, got {text!r}")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive, got {text!r}")
    return timedelta(seconds=seconds)


def add_token_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser(
        "token", help="print a proxy credential signed by the control plane (for bootstrap --token-file)")
    token.add_argument("--ca-dir", type=Path, required=True, help="the control plane's --ca-dir")
    token.add_argument("--namespace", default="default", help="the proxy's namespace (default: default)")
    token.add_argument("--service-account", default="default",
                       help="the proxy's service account (default: default)")
    token.add_argument("--role", choices=["sidecar", "gateway"], default="sidecar",
                       help="sidecar (default) or gateway")
    token.add_argument("--ttl", type=parse_duration, default=timedelta(days=365),
                       help="how long the token opens new streams (default 365d); open streams never expire")
    ca = commands.add_parser("ca", help="the mesh CA: `ca rotate` starts a root rotation")
    ca_commands = ca.add_subparsers(dest="ca_command", required=True, help="rotate")
    rotate = ca_commands.add_parser("rotate",
                                    help="new root; old and new roots are trusted during the overlap")
    rotate.add_argument("--ca-dir", type=Path, required=True, help="the control plane's --ca-dir")


def run_token(args: argparse.Namespace) -> int:
    from controlplane.security.tokens import TokenAuthority

    try:
        authority = TokenAuthority.load_or_create(args.ca_dir)
    except Exception as exc:
        print(f"controlplane: {args.ca_dir}: {exc}", file=sys.stderr)
        return 2
    print(authority.issue(namespace=args.namespace, service_account=args.service_account, role=args.role,
                          ttl=args.ttl, now=datetime.now(UTC)))
    return 0


def run_ca(args: argparse.Namespace) -> int:
    from controlplane.security.rotation import main_rotate

    return main_rotate(args.ca_dir)
