# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APP_STAMP := $(VENV)/.installed-app
DEV_STAMP := $(VENV)/.installed-dev
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck pytest migrate demo bench mutate clean

$(APP_STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(APP_STAMP)

# Tests and benchmarks also need the dev tools and the peers measured side by side.
$(DEV_STAMP): $(APP_STAMP) requirements-dev.txt requirements-bench.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt -r requirements-bench.txt
	touch $(DEV_STAMP)

migrate: $(APP_STAMP)
	$(PY) manage.py migrate --noinput -v0

demo: migrate
	$(PY) manage.py demo

run: demo
	$(PY) manage.py collectstatic --noinput -v0
	@echo "FleetFlag admin: http://$(HOST):$(PORT)/admin/   (API docs: http://$(HOST):$(PORT)/api/docs/)"
	@# Listen backlog 4096: daphne's default of 50 overflows when a fleet reconnects at once (docs/realtime.md).
	$(VENV)/bin/daphne -e tcp:port=$(PORT):backlog=4096:interface=$(HOST) fleetflag.asgi:application

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check agent_client
	$(VENV)/bin/lint-imports  # imports point one way (pyproject.toml [tool.importlinter])

typecheck: $(DEV_STAMP)
	$(VENV)/bin/mypy --strict agent_client
	$(VENV)/bin/mypy core flags audit accounts vehicles experiments realtime fleetflag

pytest: $(DEV_STAMP)
	FLEETFLAG_SETTINGS=test $(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(DEV_STAMP)
	$(PY) bench/eval_bench.py

# Mutation testing, by hand (not part of `make test` or CI): mutants of the safety-critical
# modules below, each run against the tests that execute the mutated function (SQLite, local
# memory); prints the survivors. Settings in pyproject.toml [tool.mutmut]; results stay in
# mutants/ (ignored), so a second run only tests what changed. `make mutate MUTANTS='flags.permissions.*'`
# runs a subset.
MUTATE_MODULES := agent_client/bucketing.py flags/permissions.py accounts/keys.py flags/services.py \
	flags/operations.py flags/governance.py accounts/permissions.py accounts/authentication.py \
	agent_client/rules.py agent_client/evaluator.py audit/services.py
# MUTATE_TESTS: the tests that may kill (default: [tool.mutmut] in pyproject.toml). A run with
# another selection starts over (mutmut then recollects which tests call which function), so
# docs/mutation.md runs the modules in groups, each against its own tests.
MUTATE_TESTS ?=
MUTATE_JOBS ?= 1
MUTANTS ?=
MUTMUT := FLEETFLAG_SETTINGS=test MUTATE_MODULES="$(MUTATE_MODULES)" MUTATE_TESTS="$(MUTATE_TESTS)" $(PY) -c 'import os; \
	from mutmut import configuration; c = configuration.config(); c.only_mutate = os.environ["MUTATE_MODULES"].split(); \
	tests = os.environ["MUTATE_TESTS"].split(); \
	c.pytest_add_cli_args_test_selection = tests + ["-m", "not live and not browser"] if tests else c.pytest_add_cli_args_test_selection; \
	from mutmut.__main__ import cli; cli()'

mutate: $(DEV_STAMP)
	mkdir -p mutants && echo '*' > mutants/.gitignore
	@# A module newly listed was copied here unmutated by an earlier run: drop the copy so it is
	@# mutated, and the stats of which tests run which function, so they are collected again.
	@for m in $(MUTATE_MODULES); do test -e mutants/$$m.meta || rm -f mutants/$$m mutants/mutmut-stats.json; done
	$(MUTMUT) run --max-children $(MUTATE_JOBS) $(MUTANTS)
	@echo "Mutants not killed (\`$(VENV)/bin/mutmut show NAME\` for the diff):"
	@$(MUTMUT) results

clean:
	rm -rf $(VENV) var
