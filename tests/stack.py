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
import secrets
import shutil
import signal
import socket
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
    return bool(os.environ.get("CI"))


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of an ``airflow`` subprocess: ours, the venv's bin first, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(AIRFLOW_ENV)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it forked."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


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
SCHEDULER_PG = os.environ.get("POLYV_TEST_AIRFLOW_PG", "postgres@127.0.0.1:5432")
SCHEDULER_PARALLELISM = 3
# The processes a scheduler stack runs, each in its own process group (stopped as a group).
SCHEDULER_PROCESSES = ("api-server", "scheduler", "dag-processor")


class StackProcessDied(RuntimeError):
    """A process of the scheduler stack exited: waiting any longer would only hang."""


class SchedulerStack:
    """A running Airflow: ``airflow(...)`` runs CLI commands against it, ``sql(...)`` reads its
    metadata DB, ``wait_*`` poll it (bounded, failing at once if a stack process died)."""

    def __init__(self, home: Path, db_name: str, env: dict[str, str]) -> None:
        self.home = home
        self.db_name = db_name
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        self.api_url = ""

    # ---- processes ------------------------------------------------------------------------------
    def log_path(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def start(self, name: str, *args: str) -> None:
        with self.log_path(name).open("wb") as log:
            self.procs[name] = subprocess.Popen(
                [str(BIN / "airflow"), name, *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stopped with everything it forks
            )

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise StackProcessDied(
                    f"airflow {name} exited with code {proc.returncode}; its log ({self.log_path(name)}):\n"
                    + self.log_tail(name)
                )

    def stop(self) -> None:
        """SIGTERM every process group at once, then SIGKILL what is left after 5 s (a graceful
        scheduler shutdown takes 20 s and more; nothing of the stack outlives the session anyway)."""
        procs = [p for p in self.procs.values() if p.poll() is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            # Whatever it forked into its group (executor workers, task processes) goes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    # ---- the CLI and the metadata DB -------------------------------------------------------------
    def airflow(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``airflow <args>`` against this stack; fails the test on a non-zero exit if ``check``."""
        proc = subprocess.Popen(
            [str(BIN / "airflow"), *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            out, err = proc.communicate()
            pytest.fail(f"airflow {' '.join(args)} timed out after {timeout} s:\n{out[-3000:]}\n{err[-3000:]}")
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check and proc.returncode != 0:
            pytest.fail(f"airflow {' '.join(args)} exited with {proc.returncode}:\n{out[-3000:]}\n{err[-3000:]}")
        return result

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        """Rows of a query on the metadata DB (read-only use: the scheduler owns it)."""
        import psycopg

        with psycopg.connect(_pg_dsn(self.db_name), autocommit=True) as conn:
            return conn.execute(query, params or None).fetchall()

    def wait_until(self, what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
        """Poll ``check`` until it returns something truthy (returned); fail after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out after {timeout} s waiting for {what}; last: {value!r}\n"
                    f"scheduler log tail:\n{self.log_tail('scheduler')}"
                )
            time.sleep(interval)

    def wait_for_dag(self, dag_id: str, timeout: float = 90) -> None:
        """Until the dag-processor has serialized ``dag_id`` (a backfill needs it)."""
        self.wait_until(
            f"DAG {dag_id} to be parsed",
            lambda: self.sql("SELECT 1 FROM serialized_dag WHERE dag_id = %s", (dag_id,)),
            timeout,
        )

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        rows = self.sql(
            "SELECT run_id, state, run_type, logical_date, data_interval_start, data_interval_end, "
            "start_date, end_date, backfill_id FROM dag_run WHERE dag_id = %s ORDER BY logical_date",
            (dag_id,),
        )
        keys = ("run_id", "state", "run_type", "logical_date", "data_interval_start", "data_interval_end")
        keys += ("start_date", "end_date", "backfill_id")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def wait_for_runs(self, dag_id: str, count: int, timeout: float = 300) -> list[dict[str, Any]]:
        """Until ``count`` runs of ``dag_id`` exist and all are finished; returns them."""
        finished = ("success", "failed")

        def done() -> list[dict[str, Any]] | None:
            runs = self.runs(dag_id)
            return runs if len(runs) >= count and all(r["state"] in finished for r in runs) else None

        return self.wait_until(f"{count} finished runs of {dag_id}", done, timeout, interval=1)

    def task_instances(self, dag_id: str) -> list[dict[str, Any]]:
        rows = self.sql(
            "SELECT run_id, task_id, state, start_date, end_date, try_number FROM task_instance "
            "WHERE dag_id = %s ORDER BY start_date",
            (dag_id,),
        )
        keys = ("run_id", "task_id", "state", "start_date", "end_date", "try_number")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        rows = self.sql(
            "SELECT value FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = %s AND key = %s",
            (dag_id, run_id, task_id, key),
        )
        if not rows:
            return None
        value = rows[0][0]
        return json.loads(value) if isinstance(value, str) else value

    def task_logs(self, dag_id: str, run_id: str) -> list[Path]:
        return sorted((self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}").glob("**/*.log"))

    def task_log_text(self, dag_id: str, run_id: str) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.task_logs(dag_id, run_id))


def _pg_dsn(dbname: str) -> str:
    user, _, hostport = SCHEDULER_PG.partition("@")
    host, _, port = hostport.partition(":")
    return f"host={host} port={port or 5432} user={user} dbname={dbname}"


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(_pg_dsn("postgres"), autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def scheduler_stack_env() -> dict[str, str]:
    """Extra environment of every scheduler-stack process (override it: e.g. ``AIRFLOW_CONN_*``)."""
    return {}


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """A SIGTERM to pytest (a CI runner giving up) unwinds the fixtures instead of leaving the
    stack's process groups and database behind."""

    def unwind(signum: int, frame: Any) -> None:
        raise SystemExit(f"pytest got signal {signum}: stopping the scheduler stack")

    previous = signal.getsignal(signal.SIGTERM)
    replace = previous in (signal.SIG_DFL, None)
    if replace:
        signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        if replace:
            signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def scheduler_stack(scheduler_stack_env: dict[str, str]) -> Iterator[SchedulerStack]:
    """api-server + scheduler (LocalExecutor, parallelism 3) + dag-processor on the repo's dags/.

    Its own AIRFLOW_HOME (not the SQLite stack's) and metadata DB ``polyv_af_<random>`` on the
    local PostgreSQL, dropped at the end. The scheduler creates no scheduled runs
    (``use_job_schedule`` off): only what a test asks for (backfills, triggered runs) runs, so
    unpausing a DAG does not start its latest interval against default params.
    """
    import psycopg

    try:
        _pg_admin("SELECT 1")
    except psycopg.Error as exc:
        if in_ci():
            pytest.fail(f"PostgreSQL is required in CI for the scheduler stack ({SCHEDULER_PG}): {exc}")
        pytest.skip(f"PostgreSQL not reachable for the scheduler stack ({SCHEDULER_PG}): {exc}")

    home = Path(tempfile.mkdtemp(prefix="polyv-airflow-scheduler-"))
    db_name = f"polyv_af_{secrets.token_hex(5)}"
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            # This checkout's package first, whatever the venv's editable install points at.
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{SCHEDULER_PG}/{db_name}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(SCHEDULER_PARALLELISM),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        }
    )
    env.update(scheduler_stack_env)
    stack = SchedulerStack(home, db_name, env)
    stack.api_url = api_url
    created = False
    with _sigterm_unwinds():
        try:
            _pg_admin(f"CREATE DATABASE {db_name}")
            created = True
            stack.airflow("db", "migrate", timeout=240)
            stack.start("api-server", "--port", str(port), "--workers", "1")
            stack.start("scheduler")
            stack.start("dag-processor")

            def api_up() -> bool:
                try:
                    with urllib.request.urlopen(f"{api_url}/api/v2/version", timeout=2):
                        return True
                except OSError:
                    return False

            stack.wait_until("the api-server to answer", api_up, timeout=120)
            stack.wait_until(
                "the scheduler's heartbeat",
                lambda: stack.sql("SELECT 1 FROM job WHERE job_type = 'SchedulerJob' AND state = 'running'"),
                timeout=120,
            )
            yield stack
        finally:
            stack.stop()
            if created:
                with contextlib.suppress(psycopg.Error):
                    _pg_admin(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
            if not os.environ.get("POLYV_KEEP_AIRFLOW_HOME"):
                shutil.rmtree(home, ignore_errors=True)
