"""The local mesh: the control plane, an ingress and an egress gateway and every service of a policy
directory with its sidecar, as real processes on loopback (`make run`, `python -m controlplane.mesh`, and
the e2e tests), plus the demo service that plays every service and the compose stack generator.

Modules: `plan` (policy → which processes on which addresses, pure), `processes` (start, watch and stop
processes by PID), `runner` (brings a plan up and down), `demo_service` (the asyncio HTTP app), `compose`
(writes compose/ from config/). This file imports nothing heavy: `python -m controlplane.mesh.demo_service`
runs through it.
"""
