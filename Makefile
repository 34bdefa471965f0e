# Every routine task has a name here. `make run` starts the platform, `make test` tests it;
# both install what is missing first (Python deps via uv from uv.lock; the Kafka broker jars
# via Maven on the first `services up`).

SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
VENV := .venv
STAMP := $(VENV)/.synced
VIGIL := $(VENV)/bin/vigil
PYTEST_ARGS ?=

DURATION ?= 180

.PHONY: demo help install run services-up services-down services-status migrate test test-unit \
        test-integration lint format lock clean browser api dashboard

help: ## list the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(UV):
	@echo "uv not found: installing it with pip (user site)"
	python3 -m pip install --quiet --user uv

$(STAMP): pyproject.toml uv.lock | $(UV)
	@bash infra/check-toolchain.sh
	$(UV) sync --frozen
	@touch $@

install: $(STAMP) ## install Python dependencies from uv.lock into .venv

demo: $(STAMP) ## everything + traffic with every scenario + a summary (DURATION=180 seconds)
	$(VIGIL) demo --duration $(DURATION) $(DEMO_ARGS)

run: $(STAMP) ## start the services, Dagster UI, dashboard and REST API; Ctrl-C stops them
	$(VIGIL) run

api: $(STAMP) ## serve the REST API alone (services must be up)
	$(VIGIL) api

dashboard: $(STAMP) ## serve the Streamlit dashboard alone (services must be up)
	$(VENV)/bin/streamlit run dashboards/app.py

browser: ## install Debian's chromium + chromium-driver for the browser test (apt-get)
	@bash infra/install-browser.sh

services-up: $(STAMP) ## start the local services (add S3=1 for the loopback S3 server)
	$(VIGIL) services up $(if $(S3),--s3,)

services-down: $(STAMP) ## stop the local services
	$(VIGIL) services down

services-status: $(STAMP) ## show each local service, its address and health
	$(VIGIL) services status

migrate: $(STAMP) ## apply pending sql/ migrations
	$(VIGIL) db migrate

test: $(STAMP) browser ## run every test (starts its own services on free ports)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-unit: $(STAMP) ## run the tests that need no services
	$(VENV)/bin/pytest -m "not integration" $(PYTEST_ARGS)

test-integration: $(STAMP) ## run the tests against real Kafka, Postgres and S3
	$(VENV)/bin/pytest -m integration $(PYTEST_ARGS)

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

format: $(STAMP) ## apply ruff's fixes and formatting to imports
	$(VENV)/bin/ruff check --fix .

lock: | $(UV) ## re-resolve uv.lock after editing pyproject.toml
	$(UV) lock

clean: ## stop services and delete local state (data, logs, lake) — not the jar cache
	-$(VIGIL) services down
	rm -rf .vigil/postgres .vigil/kafka .vigil/lake .vigil/logs .vigil/run .vigil/dagster
