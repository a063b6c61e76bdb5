"""The shared Airflow test stack, as a pytest plugin (registered in tests/conftest.py).

One throwaway ``AIRFLOW_HOME`` (SQLite metadata DB) per session, ``airflow db migrate`` once,
one ``airflow api-server`` once, and ``run_dag`` to run a DAG the way a worker does. Any test
folder (tests/airflow today; fleet, browser or e2e suites later) uses the same fixtures and so
the same api-server: a conftest calls :func:`use_airflow_env` at import time (before any test
module imports ``airflow``, whose configuration is read once, at first import) and asks for
the fixtures ``airflow_db``, ``api_server`` or ``run_dag``. Nothing starts unless asked for.

DAG runs go through ``airflow dags test --use-executor`` in a subprocess, against the
api-server: the path a real worker takes (supervisor, secret masking, task log files under
``AIRFLOW_HOME/logs``), at about 3 s per run.

Opt-in, for what ``dags test`` cannot show (backfills, runs the scheduler starts side by side):
``scheduler_stack``, a whole Airflow (api-server, scheduler with the LocalExecutor,
dag-processor) with its own AIRFLOW_HOME and its metadata DB in a fresh PostgreSQL database,
dropped at the end. Its processes' extra environment (connections) comes from the fixture
``scheduler_stack_env``, which a conftest overrides.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripts import airflow_stack
from tests.dag_readers import AUTH_MANAGER, stack_users

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
BIN = Path(sys.executable).parent

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="polyv-airflow-tests-"))
AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    # Never let a caller's setting point the tests at a real metadata database.
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME}/airflow.db",
    # One LocalExecutor worker: `dags test --use-executor` forks `parallelism` workers, and
    # with many of them its shutdown can miss a worker and hang.
    "AIRFLOW__CORE__PARALLELISM": "1",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
}


def use_airflow_env() -> None:
    """Point this process (and so in-process Airflow imports) at the throwaway AIRFLOW_HOME."""
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != str(AIRFLOW_HOME):  # pragma: no cover
        print(
            "warning: airflow was imported before tests/stack.py set its environment; "
            "in-process tests use its configuration",
            file=sys.stderr,
        )
    os.environ.update(AIRFLOW_ENV)


def in_ci() -> bool:
    """Whether this is a CI run (tests/services.py holds the rule; named here for this module's users)."""
    from tests.services import in_ci as ci

    return ci()


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of an ``airflow`` subprocess: ours, the venv's bin first, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(AIRFLOW_ENV)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


free_port = airflow_stack.free_port
stop_group = airflow_stack.stop_group


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.environ.get("POLYV_KEEP_AIRFLOW_HOME"):
        shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """``airflow db migrate`` once per session (SQLite under the throwaway AIRFLOW_HOME)."""
    use_airflow_env()
    proc = subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=subprocess_env(), capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return AIRFLOW_HOME / "airflow.db"


@pytest.fixture(scope="session")
def api_server(airflow_db: Path) -> Iterator[str]:
    """An ``airflow api-server`` for the executor's task supervisor; its execution API URL."""
    port = free_port()
    log = (AIRFLOW_HOME / "api-server.log").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "airflow"), "api-server", "--port", str(port)],
        env=subprocess_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # its own group: we stop it and its workers
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/version", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "airflow api-server did not start: " + (AIRFLOW_HOME / "api-server.log").read_text()[-3000:]
                    ) from None
                time.sleep(0.3)
        yield f"{url}/execution/"
    finally:
        stop_group(proc)
        log.close()


@dataclass
class DagRunResult:
    """What one ``airflow dags test`` left behind, read from the metadata DB and log files."""

    returncode: int
    output: str
    state: str | None
    run_id: str | None
    data_interval: tuple[str, str] | None
    xcom: Any
    task_logs: list[Path]

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.task_logs)


RunDag = Callable[..., DagRunResult]


@pytest.fixture(scope="session")
def run_dag(api_server: str, airflow_db: Path) -> RunDag:
    """Run a DAG like a worker would: ``airflow dags test <dag> <date> -c <conf> --use-executor``."""

    def run(
        dag_id: str,
        logical_date: str,
        conf: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 150,
    ) -> DagRunResult:
        cmd = [str(BIN / "airflow"), "dags", "test", dag_id, logical_date, "--use-executor"]
        if conf:
            cmd += ["-c", json.dumps(conf)]
        full_env = subprocess_env(AIRFLOW__CORE__EXECUTION_API_SERVER_URL=api_server, **(env or {}))
        proc = subprocess.Popen(
            cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            output, _ = proc.communicate()
            pytest.fail(f"airflow dags test {dag_id} timed out:\n{output[-4000:]}")
        return _read_run(dag_id, logical_date, proc.returncode, output)

    return run


def _read_run(dag_id: str, logical_date: str, returncode: int, output: str) -> DagRunResult:
    db = sqlite3.connect(AIRFLOW_HOME / "airflow.db")
    try:
        row = db.execute(
            "SELECT run_id, state, data_interval_start, data_interval_end FROM dag_run "
            "WHERE dag_id = ? AND logical_date LIKE ? ORDER BY id DESC LIMIT 1",
            (dag_id, f"{logical_date}%"),
        ).fetchone()
        xcom = None
        if row:
            value = db.execute(
                "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'return_value'", (dag_id, row[0])
            ).fetchone()
            if value:
                xcom = json.loads(value[0]) if isinstance(value[0], str) else value[0]
    finally:
        db.close()
    logs = sorted((AIRFLOW_HOME / "logs" / f"dag_id={dag_id}").glob(f"run_id={row[0]}/**/*.log")) if row else []
    return DagRunResult(
        returncode,
        output,
        row[1] if row else None,
        row[0] if row else None,
        (row[2], row[3]) if row else None,
        xcom,
        logs,
    )


# ---- opt-in: a whole Airflow with a scheduler (LocalExecutor, metadata DB in PostgreSQL) ----------
# The stack itself lives in scripts/airflow_stack.py: scripts/demo_distributed.sh starts the same one.
SCHEDULER_PG = airflow_stack.PG
SCHEDULER_PARALLELISM = 3
# The processes a scheduler stack runs, each in its own process group (stopped as a group).
SCHEDULER_PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Every scheduler stack runs the simple auth manager plus users who may read one DAG each
#: (tests/auth_manager.py): ``admin`` is unchanged, the per-DAG checks can be tried.
STACK_AUTH_ENV = {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": stack_users()}
SchedulerStack = airflow_stack.AirflowStack
StackProcessDied = airflow_stack.StackProcessDied


def require_postgres(what: str) -> None:
    """Fail in CI, skip elsewhere, when the local PostgreSQL is not reachable."""
    import psycopg

    try:
        airflow_stack.pg_admin("SELECT 1")
    except psycopg.Error as exc:
        if in_ci():
            pytest.fail(f"PostgreSQL is required in CI for {what} ({SCHEDULER_PG}): {exc}")
        pytest.skip(f"PostgreSQL not reachable for {what} ({SCHEDULER_PG}): {exc}")


@pytest.fixture(scope="session")
def scheduler_stack_env() -> dict[str, str]:
    """Extra environment of every scheduler-stack process (override it: e.g. ``AIRFLOW_CONN_*``)."""
    return {}


class _StackPool:
    """At most one scheduler stack at a time, for one environment: a test folder that overrides
    ``scheduler_stack_env`` (tests/e2e, tests/browser) gets a stack with *its* environment even
    when another folder's tests started one earlier in the same session (a session-scoped stack
    would have kept the first folder's connections and settings)."""

    def __init__(self) -> None:
        self.key: tuple[tuple[str, str], ...] | None = None
        self.running: contextlib.AbstractContextManager[SchedulerStack] | None = None
        self.stack: SchedulerStack | None = None

    def get(self, env: dict[str, str]) -> SchedulerStack:
        key = tuple(sorted(env.items()))
        if self.stack is None or key != self.key:
            self.close()
            running = airflow_stack.running_stack(
                {**STACK_AUTH_ENV, **env},
                auth_manager=AUTH_MANAGER,
                parallelism=SCHEDULER_PARALLELISM,
                fail=pytest.fail,
                keep_home=bool(os.environ.get("POLYV_KEEP_AIRFLOW_HOME")),
            )
            self.stack = running.__enter__()
            self.running, self.key = running, key
        return self.stack

    def close(self) -> None:
        running, self.running, self.stack, self.key = self.running, None, None, None
        if running is not None:
            running.__exit__(None, None, None)


# The pools of this process (one, while the session fixture below is alive): the hook below
# reaches them there.
_POOLS: list[_StackPool] = []


@pytest.fixture(scope="session")
def _scheduler_stacks() -> Iterator[_StackPool]:
    pool = _StackPool()
    _POOLS.append(pool)
    try:
        yield pool
    finally:
        _POOLS.remove(pool)
        pool.close()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the scheduler stack as soon as the next test (of this process: one pytest-xdist worker
    under `make test`) does not use it: an idle stack's scheduler, dag-processor, triggerer and
    api-server otherwise keep two shared cores busy until the session ends. A later test that
    asks for it again gets a fresh one (as it does when the stack's environment changes)."""
    if nextitem is not None and "scheduler_stack" in getattr(nextitem, "fixturenames", ()):
        return
    for pool in _POOLS:
        pool.close()


@pytest.fixture
def scheduler_stack(_scheduler_stacks: _StackPool, scheduler_stack_env: dict[str, str]) -> SchedulerStack:
    """api-server + scheduler (LocalExecutor, parallelism 3) + dag-processor + triggerer on the
    repo's dags/, with the auth manager of tests/auth_manager.py (``admin``, and users who may
    read one DAG each: :data:`tests.dag_readers.DAG_READERS`).

    Its own AIRFLOW_HOME (not the SQLite stack's) and metadata DB ``polyv_af_<random>`` on the
    local PostgreSQL, dropped at the end. Started once and shared by the tests of one
    ``scheduler_stack_env`` (restarted when a test needs another). The scheduler creates no
    scheduled runs (``use_job_schedule`` off): only what a test asks for (backfills, triggered
    runs) runs, so unpausing a DAG does not start its latest interval against default params.
    """
    require_postgres("the scheduler stack")
    return _scheduler_stacks.get(scheduler_stack_env)
