# Every target creates .venv (and installs the project) if it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-test e2e test lint format bench bench-large soak fuzz dev-server worker clean

# pip's output goes to $(INSTALL_LOG), not the screen: an index configured with extra
# locations makes pip warn "Location '...' is ignored" for every package, pages that bury
# the first screen. On failure the log is printed without those warnings.
INSTALL_LOG := $(VENV)/install.log
PIP_INSTALL := $(PY) -m pip install --disable-pip-version-check --progress-bar off

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing slipway and its tools into $(VENV) (pip's log: $(INSTALL_LOG))"
	@{ $(PIP_INSTALL) --upgrade pip && $(PIP_INSTALL) -c constraints.txt -e '.[dev]'; } \
		>$(INSTALL_LOG) 2>&1 \
		|| { grep -v "^WARNING: Location '.*' is ignored" $(INSTALL_LOG); \
		     echo "pip install failed; its whole log: $(INSTALL_LOG)"; exit 1; }
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m demo

# Six pytest-xdist workers on two cores. `loadscope` keeps a module on one worker: its
# module-scoped servers start once, and tests that build on each other stay in order. The
# whole runs on real processes (crash safety, many commits, a third-party service: marker
# `e2e`) have their own target, `e2e`, as the demo's journey has `demo-test`: they mostly wait
# on real time and judge real latency (a load test's p95), so they run beside each other
# rather than beside the CPU-bound tests, and `make test` stays within five minutes.
PYTEST_ARGS ?= -n 6 --dist loadscope --no-loadscope-reorder --durations=15 -m 'not demo and not e2e'
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The end-to-end runs on real processes, one module a worker (CI runs it).
e2e: $(STAMP)
	$(PY) -m pytest -n 5 --dist loadscope --durations=10 -m 'e2e and not demo'

# The demo's two releases on a stack of their own, with every outcome asserted (CI runs it).
demo-test: $(STAMP)
	$(PY) -m pytest -m demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) -m tests.bench.run

# 10,000 runs parked at a gate: worker memory, time until all are parked, approvals (long).
bench-large: $(STAMP)
	$(PY) -m tests.bench.run --large

# Definition validation, property-based: many more examples than `make test` runs.
FUZZ_EXAMPLES ?= 5000
FUZZ_RUNS ?= 60
fuzz: $(STAMP)
	SLIPWAY_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) SLIPWAY_FUZZ_RUNS=$(FUZZ_RUNS) \
		$(PY) -m pytest tests/workflows/test_definition_fuzz.py -p no:cacheprovider

# Many commits at once while workers and the server die; SCALE=large for the long one.
SCALE ?= small
soak: $(STAMP)
	$(PY) -m tests.soak.run --scale $(SCALE)

dev-server: $(STAMP)
	mkdir -p .demo
	$(VENV)/bin/temporal server start-dev --db-filename .demo/temporal.db --ip 127.0.0.1 --ui-port 8233

# ROLE=deployer|runner|all (default all: one process serving both task queues).
ROLE ?= all
worker: $(STAMP)
	$(PY) worker.py --role $(ROLE)

clean:
	rm -rf .demo .pytest_cache .mypy_cache .ruff_cache
