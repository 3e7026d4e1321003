# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export FLWR_DISABLE_UPDATE_CHECK := 1

# The main job: FedAvg on digits (10 clients, Dirichlet 0.5) as a Ray simulation via `flwr run`.
RUN_CONFIG ?= strategy='fedavg' dataset='digits' num-clients=10 clients-per-round=10 num-rounds=20 dirichlet-alpha=0.5 seed=0

.PHONY: run test inprocess federation-demo venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,tracking]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/fedsign simulate --run-config "$(RUN_CONFIG)"

inprocess: $(STAMP)
	$(BIN)/fedsign run --run-config "$(RUN_CONFIG)"

# Loopback deployment: SuperLink + 2 SuperNodes over TLS with SuperNode authentication, 2 rounds of FedSign.
federation-demo: $(STAMP)
	$(BIN)/fedsign federation demo

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf runs .flwr .pytest_cache
