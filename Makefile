# Every target creates .venv (and installs the project) if it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench dev-server worker clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m starters.demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) -m tests.bench.run

dev-server: $(STAMP)
	mkdir -p .demo
	$(VENV)/bin/temporal server start-dev --db-filename .demo/temporal.db --ip 127.0.0.1 --ui-port 8233

worker: $(STAMP)
	$(PY) worker.py

clean:
	rm -rf .demo .pytest_cache .mypy_cache .ruff_cache
