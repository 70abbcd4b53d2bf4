# Ebb — the two set-up commands are `make run` and `make test`; both install what
# they need (a virtualenv, the package, and the Go-built control plane) by themselves.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST := $(BIN)/python -m pytest

.PHONY: run test venv binaries test-binaries browser manifests lint typecheck unit e2e bench down clean help

help:
	@echo "make run   - the whole system on one machine (local control plane + Ebb)"
	@echo "make test  - lint, type-check, unit and end-to-end tests on the real control plane"
	@echo "make bench - benchmarks (results go to BENCHMARKS.md by hand)"
	@echo "make down  - stop a cluster left running by 'make run KEEP=1'"

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (3.11+)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,dev,plot]'
	@touch $@

venv: $(STAMP)

binaries:
	@hack/build-binaries.sh

# The tests also need helm (the chart's tests); `make run` does not.
test-binaries:
	@hack/build-binaries.sh --with-helm

browser:
	@hack/install-browser.sh

# manifests/install.yaml and deploy/aws/*.json, from charts/ebb and deploy/aws/ebb-iam.yaml.
manifests: venv test-binaries
	$(BIN)/python hack/render_manifests.py

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

unit: venv test-binaries
	$(PYTEST) tests/unit -q

e2e: venv test-binaries browser
	EBB_REQUIRE_E2E=1 $(PYTEST) tests/e2e -q

test: venv test-binaries browser lint typecheck
	EBB_REQUIRE_E2E=1 $(PYTEST) tests -q --durations=30

run: venv binaries
	$(BIN)/python -m local_stack.run $(if $(KEEP),--keep,)

down: venv
	$(BIN)/python -m local_stack.cluster down

bench: venv binaries
	$(BIN)/python -m bench

clean: down
	rm -rf .ebb .ebb-test* $(VENV)
