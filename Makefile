# Two set-up commands for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Each creates/reuses the virtualenv in $(VENV) and installs the package with what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.minigemini-installed
DEMO_OUT ?= outputs/demo
PYTEST_ARGS ?=

.PHONY: demo test install clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,gen,eval,web,qlora]'
	@touch $@

demo: $(STAMP)
	$(BIN)/minigemini demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) tests

clean-venv:
	rm -rf $(VENV)
