# Streamotion developer entry points. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
EXTRAS ?= operator,ingest,jobs,serving,dev
export PIP_CACHE_DIR ?= $(HOME)/.cache/streamotion/pip
export PIP_DISABLE_PIP_VERSION_CHECK = 1
PYTEST_ARGS ?=
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: help venv prepare lint format generate test local up down images

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)  ## create or update .venv (the CLI lands at .venv/bin/streamotion)

prepare: venv  ## build or fetch the real servers the tests use, into ~/.cache/streamotion
	$(PY) -m streamotion.dev.prepare

lint: venv  ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv  ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

generate: venv  ## regenerate the CRD and docs/api.md from the API models
	$(PY) -m streamotion crd -o charts/streamotion/crds/streampipelines.streamotion.io.yaml
	$(PY) -c 'from streamotion.api.docs import api_reference; open("docs/api.md","w").write(api_reference())'

test: venv prepare lint  ## every test, against real servers (the CI command)
	$(VENV)/bin/pytest $(PYTEST_ARGS)
