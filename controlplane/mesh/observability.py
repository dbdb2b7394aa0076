"""The local mesh's Prometheus scrape configuration (config/observability/prometheus.yml): the control
plane's /metrics and every Envoy's /stats/prometheus on its admin port. The local mesh hands out admin ports
from 15000 in the order of its plan, so the file is generated from the plan:

    .venv/bin/python -m controlplane.mesh.observability          # rewrite it (also `make generated`)
    .venv/bin/python -m controlplane.mesh.observability --check  # exit 1 when stale

Not policy: the loader skips config/observability/. The compose stack has its own
(compose/prometheus/prometheus.yml, written by controlplane.mesh.compose).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from controlplane.api.loader import load_policy_dir
from controlplane.mesh.plan import Ports, local_only, make_plan

HEADER = """\
# Prometheus scrape configuration for the local mesh (`make run`): the control plane's /metrics and every
# Envoy's /stats/prometheus on its admin port (the local mesh hands out admin ports from 15000 in the order
# of its plan). Not policy: the loader skips config/observability/. Generated from the plan by
# `.venv/bin/python -m controlplane.mesh.observability` (a unit test says when it is stale). The compose
# stack has its own: compose/prometheus/prometheus.yml.
#   prometheus --config.file=config/observability/prometheus.yml
"""

CONTROL_PLANE_ADMIN = "127.0.0.1:18001"


def local_prometheus_config(config_dir: Path) -> str:
    policy, _ = load_policy_dir(config_dir)
    plan = local_only(make_plan(policy, Ports(15000)), policy)  # the Envoys `make run` starts
    targets = "".join(f"    - {proxy.admin}   # {proxy.node_id}\n" for proxy in plan.proxies)
    return (
        HEADER
        + "global:\n  scrape_interval: 15s\nscrape_configs:\n- job_name: controlplane\n  static_configs:\n"
        + f"  - targets: [{CONTROL_PLANE_ADMIN}]\n- job_name: envoy\n  metrics_path: /stats/prometheus\n"
        + "  static_configs:\n  - targets:\n"
        + targets
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=Path("config"))
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    args = parser.parse_args(argv)
    target = args.config / "observability" / "prometheus.yml"
    wanted = local_prometheus_config(args.config)
    if args.check:
        stale = not target.exists() or target.read_text() != wanted
        if stale:
            print(f"{target} is stale: run python -m controlplane.mesh.observability", file=sys.stderr)
        return 1 if stale else 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(wanted)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
