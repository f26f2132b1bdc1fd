# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck pytest migrate demo bench clean

$(STAMP): requirements.txt requirements-dev.txt requirements-bench.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -r requirements-bench.txt
	touch $(STAMP)

migrate: $(STAMP)
	$(PY) manage.py migrate --noinput -v0

demo: migrate
	$(PY) manage.py demo

run: demo
	@echo "FleetFlag admin: http://$(HOST):$(PORT)/admin/   (API docs: http://$(HOST):$(PORT)/api/docs/)"
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) fleetflag.asgi:application

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check agent_client

typecheck: $(STAMP)
	$(VENV)/bin/mypy agent_client flags audit accounts vehicles experiments fleetflag

pytest: $(STAMP)
	FLEETFLAG_SETTINGS=test $(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) bench/eval_bench.py

clean:
	rm -rf $(VENV) var
