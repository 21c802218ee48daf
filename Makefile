# Two set-up commands for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Each creates/reuses the virtualenv in $(VENV) and installs the package with what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.minigemini-installed
DEMO_OUT ?= outputs/demo
PYTEST_ARGS ?=

.PHONY: demo test install clean-venv browser

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,gen,eval,web,qlora]'
	@touch $@

demo: $(STAMP)
	$(BIN)/minigemini demo --out $(DEMO_OUT)

test: $(STAMP) browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) tests

# The web page's browser test drives the system Chromium (Debian `chromium`); install it where we can.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq chromium chromium-driver \
	  || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; } \
	  || echo "NOTE: installing chromium failed: tests/infer/test_web_browser.py will be SKIPPED"; \
	else echo "NOTE: no /usr/bin/chromium and no root apt-get to install it: tests/infer/test_web_browser.py will be SKIPPED"; fi

clean-venv:
	rm -rf $(VENV)
