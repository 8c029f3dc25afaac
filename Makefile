# benefits-ledger developer tasks. Needs only python3 >= 3.11 on PATH; everything else goes into .venv.
SHELL := /bin/bash
.DEFAULT_GOAL := test

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Exact versions and hashes of everything a fresh machine installs (runtime, dev extras, build backend).
# pyproject.toml keeps the ranges for people who install the package into their own environment.
LOCK := requirements.lock
PYTHON_CANDIDATES := python3.13 python3.12 python3.11 python3
PACKAGES := events processor projections replay

MEMBERS ?= 2000
MONTHS ?= 12
SEED ?= 7
PYTEST_ARGS ?=

.PHONY: venv test demo lint bench clean browser lock asyncapi rules

venv: $(STAMP)

# Create the venv with the first candidate interpreter that actually runs and is >= 3.11
# (pyenv shims exist for versions that are not active, so "on PATH" is not enough).
$(PY):
	@set -e; py=""; \
	for cand in $(PYTHON_CANDIDATES); do \
	  if command -v $$cand >/dev/null 2>&1 && \
	     $$cand -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1; then \
	    py=$$cand; break; \
	  fi; \
	done; \
	if [ -z "$$py" ]; then echo "error: need python >= 3.11 (tried: $(PYTHON_CANDIDATES))" >&2; exit 1; fi; \
	echo "creating $(VENV) with $$py ($$($$py -c 'import sys; print(sys.version.split()[0])'))"; \
	if ! $$py -m venv $(VENV); then \
	  rm -rf $(VENV); \
	  echo "error: '$$py -m venv' failed (on Debian/Ubuntu install the python3-venv package)" >&2; exit 1; \
	fi

# Install exactly what the lock says (hashes checked), then the project itself without resolving
# anything more; re-install only when the lock or pyproject.toml is newer than the stamp.
$(STAMP): $(LOCK) pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Refresh the lock on purpose (after changing dependencies in pyproject.toml): the newest versions
# the ranges allow, resolved for every Python from 3.11 on, with the hashes of every published file.
lock: venv
	printf 'setuptools>=68\n' | $(VENV)/bin/uv pip compile pyproject.toml - --extra dev --universal \
	  --python-version 3.11 --generate-hashes --custom-compile-command "make lock" --upgrade -o $(LOCK)

# The rules compiled with mypyc into build/mypyc-rules (tools/mypyc_rules.py); processor/compiled.py uses
# the build only while it matches the sources. Without a C compiler, or on any mypyc error, this says so
# and the rules run as the plain Python they are.
rules: venv
	-@$(PY) tools/mypyc_rules.py

# Each run gets its own pytest temp dir: pytest prunes old runs under the shared one, which would delete
# the embedded PostgreSQL data of another test run going on at the same time.
test: venv browser asyncapi rules
	@base=$$(mktemp -d -t benefits-ledger-tests.XXXXXX) && \
	$(PY) -m pytest -q -p no:cacheprovider --basetemp="$$base" $(PYTEST_ARGS) tests; \
	status=$$?; rm -rf "$$base"; exit $$status

# The HTML report is checked in a real headless browser (Debian's chromium). Best effort: without root
# or apt the install is skipped with a warning, and that one test says why it skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the HTML report test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; the HTML report test will be skipped"; \
	  else echo "warning: chromium is not installed; the HTML report test will be skipped"; fi; }

# The official AsyncAPI parser (npm @asyncapi/parser) checks docs/asyncapi.json in the tests. Installed
# from the committed package-lock.json into tools/asyncapi/node_modules, install scripts off. Best
# effort like chromium: without node/npm the install is skipped and that test says why it skipped.
ASYNCAPI_DIR := tools/asyncapi
asyncapi: $(ASYNCAPI_DIR)/node_modules/.package-lock.json

$(ASYNCAPI_DIR)/node_modules/.package-lock.json: $(ASYNCAPI_DIR)/package-lock.json $(ASYNCAPI_DIR)/package.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix $(ASYNCAPI_DIR) --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null \
	    || echo "warning: could not install @asyncapi/parser; the AsyncAPI parser test will be skipped"; \
	else echo "warning: npm is not installed; the AsyncAPI parser test will be skipped"; fi

demo: venv
	$(VENV)/bin/benefits-ledger demo --members $(MEMBERS) --months $(MONTHS) --seed $(SEED)

lint: venv
	$(VENV)/bin/ruff check $(PACKAGES)
	$(VENV)/bin/mypy $(PACKAGES)

bench: venv rules
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) $(ASYNCAPI_DIR)/node_modules build .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
