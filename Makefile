# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= config

.PHONY: run dev-up dev-down generated test lint typecheck golden bench fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# the local mesh: control plane, ingress/egress gateways, every service of $(CONFIG) with its sidecar Envoy
run: $(STAMP)
	$(BIN)/python -m controlplane.mesh --config $(CONFIG) --log-dir run/logs

# the same mesh in docker compose (compose/; regenerate it from config/ with `python -m controlplane.mesh.compose`)
dev-up:
	@scripts/check_docker.sh
	docker compose -f compose/docker-compose.yml up --build --detach
	@echo "ingress :8080, control plane http://127.0.0.1:18001/debug/syncz, UIs through the ingress: curl -H host:grafana.maximus.local (or jaeger., prometheus.) 127.0.0.1:8080"

dev-down:
	@scripts/check_docker.sh
	docker compose -f compose/docker-compose.yml down --volumes --remove-orphans

# files generated from config/: the compose stack and the local mesh's Prometheus scrape targets
generated: $(STAMP)
	$(BIN)/python -m controlplane.mesh.compose
	$(BIN)/python -m controlplane.mesh.observability

test: $(STAMP)
	$(BIN)/ruff check controlplane tests bench
	$(BIN)/mypy
	sh scripts/ensure_chromium.sh  # Debian's chromium, for the web console's browser tests (tests/ui/)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check controlplane tests bench
	$(BIN)/ruff format --check controlplane tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

golden: $(STAMP)
	$(BIN)/pytest tests/golden --update-golden

# the long run of the policy fuzzer (tests/reliability/fuzz.py; `make test` runs a bounded one)
FUZZ_EXAMPLES ?= 10000
fuzz: $(STAMP)
	$(BIN)/python -m tests.reliability.fuzz --examples $(FUZZ_EXAMPLES)

bench: $(STAMP)
	$(BIN)/python bench/snapshot_push.py
	$(BIN)/python bench/convergence.py
	$(BIN)/python bench/scale.py --label current

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
