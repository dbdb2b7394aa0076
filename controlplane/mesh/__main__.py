"""`python -m controlplane.mesh` (what `make run` runs): bring the local mesh up, print where everything
is, keep it running until Ctrl-C (SIGINT) or SIGTERM — restarting any process that exits, with back-off,
and saying so — then stop every process by PID.

`python -m controlplane.mesh scale SERVICE N` (also `controlplane mesh scale`) changes how many instances
of a service run, live (scale.py).

Exit codes: 0 after a clean stop, 1 when something failed to start (its name and the last lines of its
log are printed), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from controlplane.mesh.plan import INGRESS, PlanError, Proxy
from controlplane.mesh.processes import MeshError, http_get
from controlplane.mesh.runner import PREVIOUS, STATE_FILE, LocalMesh, MeshSettings
from controlplane.model.identity import Role
from controlplane.ops import inspect


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.mesh",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=Path("config"), help="policy directory")
    parser.add_argument("--log-dir", type=Path, default=Path("run/logs"), help="one log file per process")
    parser.add_argument("--xds-port", type=int, default=18000, help="0: any free port")
    parser.add_argument("--admin-port", type=int, default=18001, help="0: any free port")
    parser.add_argument(
        "--proxy-port-base",
        type=int,
        default=15000,
        help="Envoy admin/outbound ports count up from here; 0: any free ports",
    )
    parser.add_argument("--sotw", action="store_true", help="Envoys use state-of-the-world ADS")
    return parser


def print_summary(mesh: LocalMesh, out: TextIO) -> None:
    plan = mesh.plan
    write = out.write
    write(
        f"\nmesh is up ({len(mesh.processes)} processes; logs in {mesh.settings.log_dir}/, the previous "
        f"run's in {mesh.settings.log_dir / PREVIOUS}/, state in {mesh.settings.log_dir / STATE_FILE})\n\n"
    )
    write(
        f"  control plane   xDS {mesh.xds}   admin http://{mesh.admin}/debug/syncz  "
        f"(.venv/bin/controlplane status)\n"
    )
    for proxy in plan.proxies:
        if proxy.role is not Role.GATEWAY:
            continue
        kind = "ingress" if proxy.node_id == INGRESS else "egress"
        ready = f"   ready http://{proxy.health}/healthz/ready" if proxy.health is not None else ""
        write(f"  {kind:<7} gateway admin http://{proxy.admin}{ready}\n")
        write(f"{'':<18}{_gateway_urls(mesh, proxy)}\n")
        if any(url.startswith("https://") for url in proxy.urls):
            write(f"{'':<18}(https: name the host, they route by SNI: curl --resolve HOST:PORT:127.0.0.1 "
                  "--cacert config/credentials/<credential>/ca.crt https://HOST:PORT/ — docs/tour.md)\n")
    header = f"{'service instance':<24} {'endpoint (who binds it)':<40} {'sidecar admin':<24} outbound"
    write(f"\n  {header}\n")
    for instance in plan.instances:
        sidecar = plan.sidecar_of(instance)
        endpoint = ",".join(str(a) for a in instance.listen)
        if sidecar.inbound is not None:
            endpoint += f" (sidecar → app :{sidecar.app_ports[0]})"
        else:
            endpoint += " (app)"
        admin = f"http://{sidecar.admin}"
        write(f"  {instance.instance_id:<24} {endpoint:<40} {admin:<24} {sidecar.outbound}\n")
    for reason in plan.skipped:
        write(f"  not started: {reason}\n")
    for line in mesh.traces:
        write(f"  traces: {line}\n")
    for diagnostic in mesh.diagnostics:
        write(f"  policy problem: {diagnostic}\n")
    synced, streams = mesh.sync_status()
    write("\nsync status" + ("" if synced else " (not every Envoy has ACKed its config yet)") + ":\n")
    inspect.render_status(streams, out)
    hint = _example(mesh)
    if hint:
        write(f"\ntry:  {hint}   (more in docs/tour.md)\n")
    write("Ctrl-C stops everything.\n")
    out.flush()


def _gateway_urls(mesh: LocalMesh, proxy: Proxy) -> str:
    """The gateway's server URLs (from the policy's Gateways at start-up), each marked when Envoy has no
    listener on its port: a passthrough server no VirtualService binds a route to, a missing credential,
    a port some other program holds."""
    if not proxy.urls:
        return "no servers: gateways get an empty config until a Gateway object selects them"
    ports = {listener.rpartition(":")[2] for listener in mesh.listeners(proxy)}
    return "  ".join(
        url if url.rpartition(":")[2] in ports else f"{url} (not listening)" for url in proxy.urls
    )


def _example(mesh: LocalMesh) -> str | None:
    """A curl through a sidecar that the current policy answers with 200 (paths vary with routes)."""
    for instance in mesh.plan.instances:
        outbound = str(mesh.plan.sidecar_of(instance).outbound)
        for path in ("/", "/api/v1/hello"):
            try:
                status, _ = http_get(outbound, path, headers={"Host": instance.host})
            except OSError:
                continue
            if status == 200:
                return f"curl -s -H 'Host: {instance.host}' http://{outbound}{path}"
    return None


def run(settings: MeshSettings, out: TextIO = sys.stdout) -> int:
    stopping: list[int] = []
    up = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        if not up:  # interrupt the start-up waits; start() stops what it started
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    mesh: LocalMesh | None = None
    try:
        mesh = LocalMesh(settings)
        out.write(
            f"starting the mesh of {settings.config_dir}/ "
            f"({len(mesh.plan.instances)} services, {len(mesh.plan.proxies)} Envoys)...\n"
        )
        out.flush()
        mesh.start()
        up = True
        print_summary(mesh, out)


        def log(line: str) -> None:
            out.write(line + "\n")
            out.flush()

        # a process that exits is restarted with back-off (supervisor.py); Ctrl-C stops everything
        mesh.keep_running(lambda: bool(stopping), log)
        out.write("stopping...\n")
        mesh.stop()
        out.write("stopped.\n")
        return 0
    except (MeshError, PlanError) as exc:
        if mesh is not None:
            mesh.stop()
        print(f"mesh: {exc}\nstopped everything else.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        out.write("interrupted while starting; stopped.\n")
        return 130
    finally:
        if mesh is not None:
            mesh.stop()  # no-op unless an unexpected exception got here first
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _scale(argv: Sequence[str]) -> int:
    from controlplane.mesh.scale import ScaleError, scale

    parser = argparse.ArgumentParser(
        prog="controlplane mesh scale",
        description="Run N instances of a service in the local mesh; a running `make run` starts or stops "
        "them live (see controlplane/mesh/scale.py).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("service", help="the ServiceEntry's name (or host)")
    parser.add_argument("count", type=int, help="how many instances")
    parser.add_argument("--config", type=Path, default=Path("config"), help="policy directory")
    args = parser.parse_args(argv)
    try:
        path, names = scale(args.config, args.service, args.count)
    except ScaleError as exc:
        print(f"mesh scale: {exc}", file=sys.stderr)
        return 1
    if names:
        print(f"{path}: {', '.join(names)} (a running `make run` starts them within a few seconds)")
    else:
        print(f"{path}: removed; {args.service} runs only the instances of its own policy")
    return 0


def _pid(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="controlplane mesh pid",
        description="Print the PID of a process of the running local mesh (from mesh.json), e.g. "
        "`kill $(controlplane mesh pid envoy-maximus-reviews-1)`; without NAME, list them all.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("name", nargs="?", help="process name: controlplane, service-ID, envoy-ID")
    parser.add_argument("--log-dir", type=Path, default=Path("run/logs"), help="the mesh's log directory")
    args = parser.parse_args(argv)
    try:
        state = json.loads((args.log_dir / STATE_FILE).read_text())
    except (OSError, ValueError) as exc:
        print(f"mesh pid: no running mesh's state in {args.log_dir}: {exc}", file=sys.stderr)
        return 1
    pids = {p["name"]: p["pid"] for p in state["processes"]}
    if args.name is None:
        for name, pid in pids.items():
            print(f"{pid:>8}  {name}")
        return 0
    if args.name not in pids:
        print(f"mesh pid: no process {args.name!r}; one of: {', '.join(pids)}", file=sys.stderr)
        return 1
    print(pids[args.name])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["scale"]:
        return _scale(argv[1:])
    if argv[:1] == ["pid"]:
        return _pid(argv[1:])
    args = _parser().parse_args(argv)
    if not args.config.is_dir():
        print(f"mesh: --config {args.config}: not a directory", file=sys.stderr)
        return 2
    settings = MeshSettings(
        args.config, args.log_dir, args.xds_port, args.admin_port, args.proxy_port_base, delta=not args.sotw
    )
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
