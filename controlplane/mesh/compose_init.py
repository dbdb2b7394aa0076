"""The compose stack's `mesh-init` step: give every Envoy its credential before it starts.

`python -m controlplane.mesh.compose_init --ca-dir /ca --bootstrap-dir /bootstrap --out /mesh` creates the
mesh CA in the shared volume if it is not there yet (the control plane, which starts after this step, uses
the same directory), then writes each checked-in bootstrap of compose/bootstrap/ to --out with a token for
the identity its node metadata claims (namespace, service account, role), as
`controlplane bootstrap --token-file` would. The checked-in bootstraps carry no secret: tokens exist only
in the stack's volume, signed by that stack's key.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from controlplane.model.identity import (
    DEFAULT_NAMESPACE,
    DEFAULT_SERVICE_ACCOUNT,
    META_NAMESPACE,
    META_ROLE,
    META_SERVICE_ACCOUNT,
    Role,
)
from controlplane.security.ca import CertificateAuthority
from controlplane.security.tokens import TokenAuthority

TOKEN_TTL = timedelta(days=365)


def with_token(bootstrap: dict[str, object], token: str) -> dict[str, object]:
    """The bootstrap with `authorization: Bearer <token>` on its ADS gRPC service."""
    dynamic = bootstrap["dynamic_resources"]
    assert isinstance(dynamic, dict)
    service = dynamic["ads_config"]["grpc_services"][0]
    service["initial_metadata"] = [{"key": "authorization", "value": f"Bearer {token}"}]
    return bootstrap


def write_bootstraps(ca_dir: Path, bootstrap_dir: Path, out: Path) -> list[Path]:
    CertificateAuthority.load_or_create(ca_dir, now=datetime.now(UTC))
    authority = TokenAuthority.load_or_create(ca_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(bootstrap_dir.glob("*.yaml")):
        bootstrap = yaml.safe_load(path.read_text())
        meta = bootstrap["node"]["metadata"]
        token = authority.issue(
            namespace=str(meta.get(META_NAMESPACE, DEFAULT_NAMESPACE)),
            service_account=str(meta.get(META_SERVICE_ACCOUNT, DEFAULT_SERVICE_ACCOUNT)),
            role=str(meta.get(META_ROLE, Role.SIDECAR.value)),
            ttl=TOKEN_TTL, now=datetime.now(UTC))
        target = out / path.name
        target.write_text(yaml.safe_dump(with_token(bootstrap, token), sort_keys=False))
        target.chmod(0o640)  # it holds a credential
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controlplane.mesh.compose_init", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ca-dir", type=Path, required=True, help="the control plane's --ca-dir")
    parser.add_argument("--bootstrap-dir", type=Path, required=True, help="compose/bootstrap/, mounted")
    parser.add_argument("--out", type=Path, required=True, help="where the Envoys read their bootstraps")
    args = parser.parse_args(argv)
    for path in write_bootstraps(args.ca_dir, args.bootstrap_dir, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
