# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APP_STAMP := $(VENV)/.installed-app
DEV_STAMP := $(VENV)/.installed-dev
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck pytest migrate demo bench clean

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
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) fleetflag.asgi:application

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check agent_client
	$(VENV)/bin/lint-imports  # imports point one way (pyproject.toml [tool.importlinter])

typecheck: $(DEV_STAMP)
	$(VENV)/bin/mypy --strict agent_client
	$(VENV)/bin/mypy core flags audit accounts vehicles experiments fleetflag

pytest: $(DEV_STAMP)
	FLEETFLAG_SETTINGS=test $(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(DEV_STAMP)
	$(PY) bench/eval_bench.py

clean:
	rm -rf $(VENV) var
