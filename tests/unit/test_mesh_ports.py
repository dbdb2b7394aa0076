"""Stable ports in the local mesh: with the assignment of the previous run (run/ports.json), adding a
service or an instance shifts no other proxy's ports (they used to count up in policy order)."""

from __future__ import annotations

from pathlib import Path

from controlplane.api.loader import load_policy_dir
from controlplane.mesh.plan import MeshPlan, Ports, local_only, make_plan
from controlplane.mesh.runner import PORTS_FILE, LocalMesh, MeshSettings, load_ports, save_ports


def entry(name: str, port: int, addresses: tuple[str, ...] = ("127.0.0.1",)) -> str:
    endpoints = "".join(f"  - address: {a}\n" for a in addresses)
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
spec:
  hosts: [{name}.test]
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints:
{endpoints}"""


def plan_of(tmp_path: Path, text: str, ports: Ports) -> MeshPlan:
    (tmp_path / "p.yaml").write_text(text)
    policy, diagnostics = load_policy_dir(tmp_path)
    assert diagnostics == []
    return make_plan(policy, ports)


def addresses(plan: MeshPlan) -> dict[str, tuple[str, ...]]:
    out = {p.node_id: (str(p.admin), str(p.outbound)) for p in plan.proxies}
    out.update({i.instance_id: tuple(str(a) for a in i.app_listen) for i in plan.instances})
    return out


def test_adding_a_service_and_an_instance_shifts_nothing(tmp_path: Path) -> None:
    before_ports = Ports(25000)
    before = addresses(plan_of(tmp_path, entry("alpha", 7101) + "---\n" + entry("omega", 7102), before_ports))
    # a new service first in the file and a second instance of alpha
    grown = entry("beta", 7103) + "---\n" + entry("alpha", 7101, ("127.0.0.1", "127.0.0.2")) + "---\n" \
        + entry("omega", 7102)
    after = addresses(plan_of(tmp_path, grown, Ports(25000, assigned=before_ports.assigned)))
    assert {k: after[k] for k in before} == before
    new = [port for k in ("beta-1", "alpha-2") for a in after[k] for port in [a.rpartition(":")[2]]]
    old = {a.rpartition(":")[2] for v in before.values() for a in v}
    assert new and not set(new) & old
    # without the earlier assignment they would shift (what `make run` did before)
    fresh = addresses(plan_of(tmp_path, grown, Ports(25000)))
    assert {k: fresh[k] for k in before} != before


def test_runner_keeps_the_assignment_in_run(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "p.yaml").write_text(entry("alpha", 7101))
    settings = MeshSettings(config, tmp_path / "run" / "logs", proxy_port_base=25100, envoy_bin="/bin/true")
    mesh = LocalMesh(settings)
    assert mesh.ports_file == tmp_path / "run" / PORTS_FILE
    save_ports(mesh.ports_file, mesh.ports)
    saved = load_ports(mesh.ports_file)
    assert saved["admin:alpha-1"] == mesh.plan.proxy("alpha-1").admin.port
    assert LocalMesh(settings).plan == mesh.plan
    (mesh.ports_file).write_text("not json")
    assert load_ports(mesh.ports_file) == {}


def test_external_services_get_no_stand_in(tmp_path: Path) -> None:
    text = entry("alpha", 7101) + "---\n" + entry("grafana", 3000).replace(
        "  name: grafana\n", "  name: grafana\n  annotations: {controlplane.io/local-mesh: external}\n")
    (tmp_path / "p.yaml").write_text(text)
    policy, diagnostics = load_policy_dir(tmp_path)
    assert diagnostics == []
    full = make_plan(policy, Ports(25200))
    local = local_only(full, policy)
    assert {i.instance_id for i in local.instances} == {"alpha-1"}
    assert "grafana-1" not in {p.node_id for p in local.proxies}
    assert local.skipped == ("default/grafana: external — start the real one on 127.0.0.1:3000",)
    # the others keep the ports of the full plan (the compose stack and the Prometheus targets use it)
    assert local.proxy("alpha-1") == full.proxy("alpha-1")
