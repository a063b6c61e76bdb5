# Two commands: `make demo` runs the main job on the bundled sample against the bundled
# simulator; `make test` runs the whole suite. Both create .venv and install first.
# `make lint`, `make typecheck` and `make test` are what .ci/run runs; `make test-fast` is the
# quick subset (no Airflow, no PostgreSQL, nothing marked slow); `make check-floors` runs that
# subset with every dependency at the oldest version setup.cfg allows (not run by CI).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SIM_PORT ?= 8750
EXTRAS := airflow,gx,postgres,redis,openlineage,dev
FLOORS_VENV := .venv-floors
# Only what the quick subset exercises: the Airflow extras' own requirements (Airflow 3.3
# needs requests>=2.32, fsspec>=2023.10, ...) would pull the core floors up and hide them.
FLOORS_EXTRAS := gx,dev
comma := ,
# The quick subset: tests/airflow is not even collected (it imports Airflow), and the markers
# of setup.cfg's [tool:pytest] exclude the rest of what needs Airflow, PostgreSQL or time.
FAST_ARGS := -q -p no:cacheprovider --ignore=tests/airflow -m "not airflow and not postgres and not slow" --durations=5

.PHONY: install demo demo-cli test test-fast lint typecheck check-floors bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo_airflow.sh

demo-cli: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo_cli.sh

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

test-fast: $(STAMP)
	@start=$$(date +%s); \
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(FAST_ARGS); rc=$$?; \
	echo "make test-fast: $$(( $$(date +%s) - start )) s"; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# A separate venv with every direct dependency pinned at its floor (scripts/floor_pins.py
# reads them from setup.cfg), then test-fast's selection there.
check-floors:
	test -x $(FLOORS_VENV)/bin/python || $(PYTHON) -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/python -m pip install -q --upgrade pip
	$(PYTHON) scripts/floor_pins.py $(subst $(comma), ,$(FLOORS_EXTRAS)) > $(FLOORS_VENV)/floors.txt
	cat $(FLOORS_VENV)/floors.txt
	$(FLOORS_VENV)/bin/python -m pip install -q -c $(FLOORS_VENV)/floors.txt -e '.[$(FLOORS_EXTRAS)]'
	$(FLOORS_VENV)/bin/python -m pip check
	@start=$$(date +%s); \
	PATH="$(CURDIR)/$(FLOORS_VENV)/bin:$$PATH" $(FLOORS_VENV)/bin/python -m pytest $(FAST_ARGS); rc=$$?; \
	echo "make check-floors: test-fast selection took $$(( $$(date +%s) - start )) s"; exit $$rc

bench: $(STAMP)
	$(BIN)/python bench/bench_engine.py

clean:
	rm -rf $(VENV) $(FLOORS_VENV) out .airflow *.egg-info
