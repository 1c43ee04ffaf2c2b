# qloop — the verbs a newcomer uses. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.qloop-installed
STACK := temporal-dev/stack.sh

QLOOP_TEMPORAL_PORT ?= 7233
QLOOP_TEMPORAL_UI_PORT ?= 8233
export VENV QLOOP_TEMPORAL_PORT QLOOP_TEMPORAL_UI_PORT

# Commands that talk to the local stack; an explicit TEMPORAL_ADDRESS in the environment wins.
LOCAL := TEMPORAL_ADDRESS="$${TEMPORAL_ADDRESS:-127.0.0.1:$(QLOOP_TEMPORAL_PORT)}" \
	QLOOP_POLICY_FILE="$${QLOOP_POLICY_FILE:-$(CURDIR)/temporal-dev/policies.yaml}"

.PHONY: demo-qpu help venv dev worker worker-start worker-stop worker-restart demo test test-suites test-chaos browser postgres lint bench down status logs record-histories

help: ## list the verbs
	@echo "usage: make VERB"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

venv: $(STAMP) ## create .venv and install qloop with its dev tools (again only when pyproject.toml changes)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	@touch $@

dev: venv ## start the local stack (Temporal dev server, QPU stand-in + S3; state in temporal-dev/data)
	@$(STACK) start

worker: venv ## run the qloop worker in the foreground (with the QPU stand-in's env when it runs)
	@$(STACK) codec-init
	$(LOCAL) env $$($(STACK) standin-env) $(BIN)/python worker.py

worker-start: venv ## start the qloop worker in the background (log: temporal-dev/data/worker.log)
	@$(STACK) worker-start

worker-stop: ## stop the background worker
	@$(STACK) worker-stop

worker-restart: venv ## restart the background worker (picks up code changes)
	@$(STACK) worker-restart

demo: venv dev ## stack + worker, then QAOA MaxCut on the noisy profile with ZNE; leaves the stack running
	@$(STACK) worker-restart
	$(LOCAL) $(BIN)/qloop run examples/qaoa_maxcut.yaml --wait
	@echo
	@echo "Web UI:    http://localhost:$(QLOOP_TEMPORAL_UI_PORT)"
	@echo "Artifacts: $${QLOOP_HOME:-$(CURDIR)/.qloop}/artifacts/"
	@echo "The stack is still running: 'make down' stops it."

demo-qpu: venv dev ## the hardware path: GHZ with ZNE on the local QPU stand-in, through the Braket API
	@$(STACK) worker-restart
	set -a; eval "$$($(STACK) standin-env)"; set +a; $(LOCAL) $(BIN)/qloop run examples/qpu_standin.yaml --wait

# The suites that break things run a second time with a fleet's shared state: artifacts in S3
# and shared state in PostgreSQL, servers the session starts itself (tests/shared_state.py).
SHARED_STATE := QLOOP_TEST_SHARED_STATE=1
SHARED_STATE_SUITES := tests/conformance tests/integration/test_governance_stack.py tests/browser

# Each lane runs both its passes even when the first fails, then fails if either did; a lane's
# lines carry its name, since the two lanes print at once.
define lane
	@status=0; \
	$(BIN)/pytest -q $(1) 2>&1 | sed -u 's/^/[$(3)] /' || status=$$?; \
	$(SHARED_STATE) $(BIN)/pytest -q $(2) 2>&1 | sed -u 's/^/[$(3), shared state] /' || status=$$?; \
	exit $$status
endef

test: venv browser postgres lint ## lint, then the test suite (starts its own Temporal servers; does not touch the dev stack)
	@$(MAKE) -j2 test-suites test-chaos

test-suites: venv browser postgres ## everything but the chaos suite; then conformance, governance and browser with shared state
	$(call lane,--ignore=tests/chaos,$(SHARED_STATE_SUITES),suites)

test-chaos: venv postgres ## the chaos suite with the defaults, then with shared state
	$(call lane,tests/chaos,tests/chaos,chaos)

# The Web UI test drives the system Chromium; Playwright's own browser downloads are never used.
CHROMIUM := $(or $(QLOOP_CHROMIUM),/usr/bin/chromium)
# $(call debian_package,PACKAGE,WHAT IT IS FOR,SHELL TEST THAT IT IS THERE,WHAT TO DO WITHOUT APT)
define debian_package
	@if $(3); then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "make $@: no $(1) here and no apt-get; $(4)" >&2; \
	  exit 1; \
	fi; \
	sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	echo "Installing Debian's $(1) package ($(2))..."; \
	$$sudo apt-get update -qq; \
	$$sudo apt-get install -y --no-install-recommends $(1)
endef

browser: ## install headless Chromium for the Web UI test (Debian's chromium package) when missing
	$(call debian_package,chromium,for tests/browser,[ -x "$(CHROMIUM)" ],install Chromium and set QLOOP_CHROMIUM to it)

# The shared-database tests start their own throwaway cluster of Debian's PostgreSQL.
postgres: ## install Debian's postgresql package for the shared-database tests when missing
	$(call debian_package,postgresql,for the shared-database tests,command -v initdb >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null,install PostgreSQL (its initdb on PATH))

lint: venv ## ruff (lint and format) and mypy (strict on schemas/ and workflows/); make test runs it first
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: venv dev ## run every bench/*.py against the local stack (prints ratios)
	@shopt -s nullglob; status=0; ran=0; \
	for f in bench/*.py; do \
	  case "$$(basename "$$f")" in _*) continue ;; esac; \
	  ran=1; echo "== $$f"; \
	  $(LOCAL) $(BIN)/python "$$f" || { echo "!! $$f failed"; status=1; }; \
	done; \
	[ "$$ran" = 1 ] || echo "no benchmarks in bench/"; \
	exit $$status

down: ## stop the worker, the QPU stand-in and the Temporal dev server (state is kept)
	@$(STACK) worker-stop
	@$(STACK) stop

status: ## is the local stack running?
	@$(STACK) status || true

logs: ## follow the dev server log (make logs WHAT=worker for the worker's)
	@$(STACK) logs $(or $(WHAT),server)

record-histories: venv ## re-record tests/histories/ from end-to-end runs (for the replay test)
	QLOOP_RECORD_HISTORIES=1 $(BIN)/pytest -q tests/integration/test_experiment_end_to_end.py \
	  tests/integration/test_governance_stack.py \
	  tests/integration/test_signed_decisions_cli.py::test_only_the_approvers_signed_decision_counts \
	  tests/integration/test_loop.py::test_a_loop_killed_at_random_iterations_follows_the_uninterrupted_trajectory \
	  tests/integration/test_sweep.py::test_a_qpu_sweep_run_twice_pays_for_nothing_the_second_time \
	  tests/integration/test_money_invariants.py
