# The two commands a newcomer needs are `make demo` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin

.PHONY: setup test lint proto proto-check unit integration bench demo demo-down clean

setup:
	@scripts/setup.sh

proto: setup
	PYTHON=$(PY) scripts/gen-protos.sh

proto-check: setup
	PYTHON=$(PY) scripts/gen-protos.sh --check

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy orchestrator agent certs deploy
	$(BIN)/lint-imports

test: setup lint proto-check
	$(BIN)/pytest -q -ra --durations=15

unit: setup
	$(BIN)/pytest -q -m unit

integration: setup
	$(BIN)/pytest -q -m integration

bench: setup
	$(PY) tests/perf/bench_api.py
	$(PY) tests/perf/bench_pod_start.py
	$(PY) -m tests.perf.bench_scheduler
	$(PY) -m tests.perf.bench_proxy_sync
	$(PY) -m tests.perf.bench_network
	$(PY) tests/perf/bench_node_failure.py

demo: setup
	@scripts/demo.sh

demo-down:
	@scripts/demo.sh --down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
