# Two commands on a fresh machine: `make demo` and `make test`.
# Each does its own set-up (venv, pinned install, Jupyter kernel, system packages)
# and skips it when nothing changed: the stamp is keyed on the dependency spec.

SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SPEC_HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(SPEC_HASH)
SYS_STAMP := $(VENV)/.system-deps
PROFILE ?= quick
JOBS ?= 2

.PHONY: demo test setup lint sync bench clean-reports

setup: $(STAMP) $(SYS_STAMP)

$(STAMP): pyproject.toml constraints.txt
	@echo ">> setting up $(VENV) with $(PY)"
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: the CPU build lies on local disk; letting another
	# package pull torch would download a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[all]'
	$(BIN)/python -m ipykernel install --sys-prefix --name nbutils --display-name "Python (nbutils)" >/dev/null
	@rm -f $(VENV)/.installed-*
	@touch $@

# Debian's chromium for the real-browser test (never a browser download).
$(SYS_STAMP):
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo ">> installing Debian chromium"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "!! chromium could not be installed; browser tests will be skipped"; \
	fi
	@mkdir -p $(VENV) && touch $@

demo: setup
	$(BIN)/nbutils run --profile $(PROFILE) --jobs $(JOBS)

test: setup
	$(BIN)/ruff check src tests benchmarks notebooks
	$(BIN)/python -m pytest tests

lint: setup
	$(BIN)/ruff check src tests benchmarks notebooks

# Notebooks are Jupytext pairs (NN_name.ipynb + NN_name.py, py:percent): edit either side,
# then sync; the newer side wins and cell ids and tags are kept. tests/test_notebooks.py
# fails while a pair is out of sync.
sync: setup
	$(BIN)/jupytext --sync notebooks/[0-9][0-9]_*.ipynb

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean-reports:
	find reports -mindepth 1 -maxdepth 1 ! -name README.md ! -name screenshots -exec rm -rf {} +
