# Two commands do all the set-up on a fresh machine:
#   make run    -> creates .venv, installs, runs the main job on the embedded default graph
#   make test   -> creates .venv, installs, runs the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test setup bench lint clean

$(BIN)/dhns-search: pyproject.toml scripts/setup.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup.sh
	@touch $@

setup: $(BIN)/dhns-search

run: setup
	$(BIN)/dhns-search run

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/eval_speed.py

lint: setup
	$(BIN)/python -m ruff check dhns_search tests

clean:
	rm -rf $(VENV) build *.egg-info
