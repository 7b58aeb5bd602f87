# codexk8s developer entry points. `make run` serves the app on the embedded default (SQLite,
# local runtime); `make test` runs ruff and the whole test suite, browser tests included.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools
UV_VERSION := 0.13.8
NPM_REGISTRY := https://registry.npmjs.org/
PY_STAMP := $(VENV)/.installed
TOOLS_STAMP := $(TOOLS)/.installed

export PATH := $(CURDIR)/$(TOOLS)/node_modules/.bin:$(PATH)
export NPM_CONFIG_REGISTRY := $(NPM_REGISTRY)

.PHONY: help setup run demo test test-kube kube-binaries lint format lock system-packages bench clean

help:
	@echo "make run    serve codexk8s at http://127.0.0.1:3000 (SQLite, local runtime)"
	@echo "make demo   start a live demo run on the server \`make run\` started (prints the links)"
	@echo "make test   ruff + the whole test suite (starts its own PostgreSQL)"
	@echo "make test-kube  the kube lane: tests against a real control plane (builds it with Go)"
	@echo "make setup  install everything the two above need (idempotent)"

setup: $(PY_STAMP) $(TOOLS_STAMP) system-packages

$(PY_STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync -q -p $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q -p $(BIN)/python --no-deps -e .
	@touch $@

$(TOOLS_STAMP): tools/package.json tools/package-lock.json
	@mkdir -p $(TOOLS)
	cp tools/package.json tools/package-lock.json $(TOOLS)/
	cd $(TOOLS) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Debian packages the tests need: Chromium for the browser tests, PostgreSQL server binaries for
# the throwaway test database, redis-server for the private Redis of the replica tests. The tests
# start (and stop) their own servers; nothing here starts a service. Installed only when missing.
system-packages:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "install as root: apt-get install$$missing"; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

run: $(PY_STAMP) $(TOOLS_STAMP)
	$(BIN)/codexk8s serve

# A newcomer's first run: a demo project, repository and agent (a scripted local process), then a
# signed issues.labeled delivery through the webhook endpoint of the server `make run` started.
demo: $(PY_STAMP)
	$(BIN)/codexk8s demo

test: setup kube-binaries
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest $(PYTEST_ARGS)

# The kube lane (docs/kube-lane.md): real kube-apiserver, controller manager, scheduler and etcd
# with kwok nodes, built from the Go module proxy into ~/.cache/codexk8s/kube when missing.
# `make test` leaves its tests out (pyproject's addopts) but builds the binaries too: the deploy
# tests build the kustomize overlays with this kubectl. A missing `go` or a failed build fails.
kube-binaries:
	bash tools/kube/build.sh

test-kube: $(PY_STAMP) kube-binaries
	$(BIN)/pytest -m kube tests/kube $(PYTEST_ARGS)

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(PY_STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock: $(PY_STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra test -p 3.11 --generate-hashes --no-header \
	  -o requirements.lock.new -q
	{ head -2 requirements.lock; cat requirements.lock.new; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock && rm requirements.lock.new

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(TOOLS) .web .states
