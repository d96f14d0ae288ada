# The two commands of the quickstart: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OPS_TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
export OPS_TEST_DATABASE_URL
# Benchmarks get a database of their own on the same server (created and migrated by the runner).
OPS_BENCH_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/exam_bench

.PHONY: run test test-sqlite test-postgres imports lint format bench seed clean rehearse

$(STAMP): pyproject.toml
	@echo "make: installing the Python dependencies into $(VENV) (first run, or pyproject.toml changed; a minute or two)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: install, migrate + seed the embedded SQLite database, serve on 127.0.0.1:8000
run: $(STAMP)
	@mkdir -p var
	@$(PY) -m backend.run_embedded || [ $$? -eq 130 ]

## test: the layer rules, then the whole suite on SQLite then on PostgreSQL
test: imports test-sqlite test-postgres

## imports: layers point one way (import-linter contracts in pyproject.toml)
imports: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache

test-sqlite: $(STAMP)
	@mkdir -p var
	@command -v tmux >/dev/null || (apt-get install -y tmux >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y tmux >/dev/null)) || echo "warning: could not install tmux; the terminal test will fail"
	DATABASE_URL=sqlite:///var/test.sqlite3 $(PY) -m pytest -p no:cacheprovider

test-postgres: $(STAMP)
	@scripts/pg-setup.sh "$(OPS_TEST_DATABASE_URL)"
	@scripts/ensure-debs.sh nginx
	DATABASE_URL=$(OPS_TEST_DATABASE_URL) $(PY) -m pytest -p no:cacheprovider

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## bench: benchmarks in tests/bench, JSON report in var/bench/
bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get install -y wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y wrk >/dev/null))
	@mkdir -p var/bench
	DATABASE_URL=$(OPS_BENCH_DATABASE_URL) $(PY) -m tests.bench.run $(ONLY)

## rehearse: nginx + 2 app hosts on PostgreSQL, exam-day load and drills, one report
rehearse: $(STAMP)
	@scripts/ensure-debs.sh nginx
	$(VENV)/bin/opsctl rehearse --database-url "$(OPS_TEST_DATABASE_URL)" $(ARGS)

clean:
	rm -rf $(VENV) var/test_exam.sqlite3* var/test.sqlite3*
