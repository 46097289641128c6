# Every target works from a fresh clone: `make demo` and `make test` run setup first when needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PINNER_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CURDIR)/dagster_home

.PHONY: setup test test-all lint demo compare bench ui defs results clean

setup: $(STAMP)

# torch first: 2.13.0 is a CPU build on this machine's disk; an unpinned torch pulls a CUDA build.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# One pytest-xdist worker per logical CPU (at most 4), each with its share of the cores' threads.
test: setup
	$(BIN)/python -m pytest -q --durations=15 -n logical --maxprocesses 4

test-all: setup
	$(BIN)/python -m pytest -q -m '' -n logical --maxprocesses 4

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg check defs

demo: setup
	$(BIN)/pinner demo

compare: setup
	$(BIN)/pinner compare

bench: setup
	$(BIN)/python benchmarks/bench_model.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_item_table.py
	$(BIN)/python benchmarks/bench_scale.py

# The UI has no authentication: it listens on localhost unless UI_HOST says otherwise.
UI_HOST ?= 127.0.0.1
# `dg dev` loads the project of pyproject.toml's [tool.dg] (the same definitions workspace.yaml
# names for `dagster dev -w workspace.yaml`, which still works but warns that it is superseded).
ui: setup
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg dev --host $(UI_HOST)

# The code location's definitions as `dg` sees them (the same as `make ui` loads).
defs: setup
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg list defs

# docs/RESULTS.md, results/INDEX.md and the README's headline from results/current/*.json.
results: setup
	$(BIN)/pinner results

clean:
	rm -rf $(VENV) data
