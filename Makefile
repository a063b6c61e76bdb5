# Two commands: `make demo` runs the main job on the bundled sample against the bundled
# simulator; `make test` runs the whole suite. Both create .venv and install first.
# `make lint`, `make typecheck`, `make demo`, `make demo-cli` and `make test` are what .ci/run
# runs; `make wheel` builds the package into dist/; `make test-fast` is the
# quick subset (no Airflow run, no PostgreSQL, nothing marked slow); `make check-floors` runs that
# subset with every dependency at the oldest version setup.cfg allows (not run by CI).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SIM_PORT ?= 8750
EXTRAS := airflow,gx,postgres,mysql,duckdb,redis,celery,openlineage,dev
# Debian packages the `mysql` extra needs to build mysqlclient (installed by `make install`
# where missing: apt-get as root, else a message saying what to install).
MYSQL_DEB := default-libmysqlclient-dev pkg-config
FLOORS_VENV := .venv-floors
# Only what the quick subset exercises: the Airflow extras' own requirements (Airflow 3.3
# needs requests>=2.32, fsspec>=2023.10, ...) would pull the core floors up and hide them.
FLOORS_EXTRAS := gx,dev
comma := ,
# The quick subset: tests/airflow is not even collected (it imports Airflow), and the markers
# of setup.cfg's [tool:pytest] exclude the rest of what needs Airflow, PostgreSQL or time.
# `make test` spreads the suite over pytest-xdist workers: most of it waits (Airflow subprocesses,
# servers, spawned processes, databases), so 3 workers on 2 cores. `--dist loadgroup` keeps the
# tests of one shared stack on one worker (tests/conftest.py: XDIST_GROUPS); every worker has its
# own throwaway AIRFLOW_HOME, simulator and schemas. PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 3
FAST_ARGS := -q -p no:cacheprovider --ignore=tests/airflow -m "not airflow and not postgres and not slow" --durations=5

.PHONY: install system-deps docs demo demo-cli demo-distributed wheel test test-fast lint typecheck check-floors bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(MAKE) --no-print-directory system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

system-deps:
	@missing=$$(for p in $(MYSQL_DEB); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ] || ! command -v dpkg-query >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "make install: installing $$missing (mysqlclient is built against them)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
	  echo "make install: mysqlclient (the mysql extra) needs the Debian packages: $$missing" >&2; \
	  echo "  run as root: apt-get install $$missing   (or drop mysql from EXTRAS)" >&2; exit 1; \
	fi

# The reference tables inside README.md and docs/*.md (marked regions), regenerated from the code;
# tests/docs fails when a committed file differs from what this writes.
docs: $(STAMP)
	$(BIN)/python scripts/make_docs.py

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo_airflow.sh

demo-cli: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo_cli.sh

# Airflow's CeleryExecutor with two workers, three accounts and (if present) partitions.
demo-distributed: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo_distributed.sh

# The wheel (pure Python; the sample, the bundled suite and the OpenLineage facet schema inside)
# into dist/, built by pip in an isolated build environment from pyproject.toml's setuptools (no
# .venv needed). Install it where Airflow runs: pip install 'dist/<wheel>[airflow]' -c <Airflow's
# constraints file>. The example DAGs stay in the repository's dags/ (not in the wheel).
wheel:
	# build/ is setuptools' in-tree staging: a module deleted since the last build must not linger.
	rm -rf build dist/polyv_connector-*.whl
	$(PYTHON) -m pip wheel -q --no-deps -w dist .
	@ls dist/polyv_connector-*.whl

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

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
	rm -rf $(VENV) $(FLOORS_VENV) out .airflow *.egg-info build dist
