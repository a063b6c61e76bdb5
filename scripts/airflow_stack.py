"""A whole Airflow on this machine, started and stopped from Python: the one copy of that code.

:func:`running_stack` starts the api-server, the scheduler, the dag-processor and the triggerer
(deferred tasks, such as an approval, need it) on the repo's ``dags/`` with their own
``AIRFLOW_HOME`` and a metadata database of their own on the local
PostgreSQL (created, then dropped), and, with ``executor="CeleryExecutor"``, Celery workers as
separate processes with Redis as the broker. The test suite (``scheduler_stack`` in
tests/stack.py, the ``distributed`` tests) and ``scripts/demo_distributed.sh`` both use it.

Nothing here imports pytest or Airflow: a failure raises :class:`StackError` (the tests turn
it into a test failure). Every process runs in a process group of its own and is stopped with
everything it forked.

Each Celery worker gets a host name of its own (``--celery-hostname`` for Celery, and for
Airflow's ``task_instance.hostname`` the ``[core] hostname_callable`` :func:`worker_hostname`):
on one machine two workers would otherwise report the same host, and a fleet's per-task table
could not tell them apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
BIN = Path(sys.executable).parent
PG = os.environ.get("POLYV_TEST_AIRFLOW_PG", "postgres@127.0.0.1:5432")
REDIS = os.environ.get("POLYV_TEST_REDIS", "127.0.0.1:6379")
#: The environment variable :func:`worker_hostname` reads (set per worker process).
HOSTNAME_ENV = "POLYV_STACK_HOSTNAME"


class StackError(RuntimeError):
    """The stack could not start, a process of it died, or a wait timed out."""


class StackProcessDied(StackError):
    """A process of the stack exited: waiting any longer would only hang."""


def worker_hostname() -> str:
    """``[core] hostname_callable`` of a stack worker: its own name, else the machine's."""
    return os.environ.get(HOSTNAME_ENV) or socket.getfqdn()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pg_dsn(dbname: str) -> str:
    user, _, hostport = PG.partition("@")
    host, _, port = hostport.partition(":")
    return f"host={host} port={port or 5432} user={user} dbname={dbname}"


def pg_uri(dbname: str, driver: str = "postgresql") -> str:
    return f"{driver}://{PG}/{dbname}"


def pg_admin(sql: str) -> None:
    """One statement on the server's ``postgres`` database (CREATE/DROP DATABASE)."""
    import psycopg

    with psycopg.connect(pg_dsn("postgres"), autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)  # type: ignore[arg-type,unused-ignore]


def stop_group(proc: subprocess.Popen[Any]) -> None:
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


def _raise(message: str) -> NoReturn:
    raise StackError(message)


class AirflowStack:
    """A running Airflow: ``airflow(...)`` runs CLI commands against it, ``sql(...)`` reads its
    metadata DB, ``wait_*`` poll it (bounded, failing at once if a stack process died).

    ``fail`` is called with a message on a failed command or a timeout and must raise (the
    tests pass ``pytest.fail``).
    """

    def __init__(self, home: Path, db_name: str, env: dict[str, str], fail: Callable[[str], NoReturn] = _raise) -> None:
        self.home = home
        self.db_name = db_name
        self.env = env
        self.fail = fail
        self.procs: dict[str, subprocess.Popen[Any]] = {}
        self.api_url = ""
        self.workers: list[str] = []

    # ---- processes ------------------------------------------------------------------------------
    def log_path(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def start(
        self, name: str, *args: str, argv: Sequence[str] | None = None, env: dict[str, str] | None = None
    ) -> None:
        """``airflow <name> <args>`` (or ``airflow <argv>``) in the background, logging to ``<name>.log``."""
        with self.log_path(name).open("wb") as log:
            self.procs[name] = subprocess.Popen(
                [str(BIN / "airflow"), *(argv if argv is not None else (name, *args))],
                env={**self.env, **(env or {})},
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
        scheduler shutdown takes 20 s and more; nothing of the stack outlives it anyway)."""
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
        """``airflow <args>`` against this stack; ``fail`` on a non-zero exit if ``check``."""
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
            self.fail(f"airflow {' '.join(args)} timed out after {timeout} s:\n{out[-3000:]}\n{err[-3000:]}")
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check and proc.returncode != 0:
            self.fail(f"airflow {' '.join(args)} exited with {proc.returncode}:\n{out[-3000:]}\n{err[-3000:]}")
        return result

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query on the metadata DB (read-only use: the scheduler owns it)."""
        import psycopg

        with psycopg.connect(pg_dsn(self.db_name), autocommit=True) as conn:
            return conn.execute(query, params or None).fetchall()  # type: ignore[arg-type,unused-ignore]

    def wait_until(self, what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
        """Poll ``check`` until it returns something truthy (returned); ``fail`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                self.fail(
                    f"timed out after {timeout} s waiting for {what}; last: {value!r}\n"
                    f"scheduler log tail:\n{self.log_tail('scheduler')}"
                )
            time.sleep(interval)

    def wait_for_dag(self, dag_id: str, timeout: float = 90) -> None:
        """Until the dag-processor has serialized ``dag_id``."""
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
        keys: tuple[str, ...] = ("run_id", "state", "run_type", "logical_date", "data_interval_start")
        keys += ("data_interval_end", "start_date", "end_date", "backfill_id")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def wait_for_runs(self, dag_id: str, count: int, timeout: float = 300) -> list[dict[str, Any]]:
        """Until ``count`` runs of ``dag_id`` exist and all are finished; returns them."""
        finished = ("success", "failed")

        def done() -> list[dict[str, Any]] | None:
            runs = self.runs(dag_id)
            return runs if len(runs) >= count and all(r["state"] in finished for r in runs) else None

        result: list[dict[str, Any]] = self.wait_until(f"{count} finished runs of {dag_id}", done, timeout, 1)
        return result

    def task_instances(self, dag_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
        """The task instances of ``dag_id`` (of one run if given), with where and how long they ran."""
        rows = self.sql(
            "SELECT run_id, task_id, map_index, rendered_map_index, state, start_date, end_date, try_number, "
            "hostname, duration FROM task_instance WHERE dag_id = %s AND (%s::text IS NULL OR run_id = %s) "
            "ORDER BY start_date, task_id, map_index",
            (dag_id, run_id, run_id),
        )
        keys: tuple[str, ...] = ("run_id", "task_id", "map_index", "rendered_map_index", "state", "start_date")
        keys += ("end_date", "try_number", "hostname", "duration")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        rows = self.sql(
            "SELECT value FROM xcom WHERE dag_id = %s AND run_id = %s AND task_id = %s AND key = %s AND map_index = %s",
            (dag_id, run_id, task_id, key, map_index),
        )
        if not rows:
            return None
        value = rows[0][0]
        return json.loads(value) if isinstance(value, str) else value

    def task_logs(self, dag_id: str, run_id: str) -> list[Path]:
        return sorted((self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}").glob("**/*.log"))

    def task_log_text(self, dag_id: str, run_id: str) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.task_logs(dag_id, run_id))


def stack_env(
    home: Path, db_name: str, api_url: str, *, executor: str, parallelism: int, extra: dict[str, str]
) -> dict[str, str]:
    """The environment of every process of a stack (no ``AIRFLOW*`` of the caller's leaks in)."""
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
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_uri(db_name, "postgresql+psycopg2"),
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            # Without it, an api-server on another port than 8080 gives tasks that die with empty logs.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API__WORKERS": "1",
            # Only what is asked for runs: unpausing a DAG does not start its latest interval.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        }
    )
    env.update(extra)
    return env


def celery_env(db_name: str, *, redis_db: int, queue: str, concurrency: int) -> dict[str, str]:
    """The CeleryExecutor's settings: Redis db ``redis_db`` as the broker, results in the metadata
    DB, and a queue of this stack's own (another stack on the same Redis db never takes its tasks)."""
    return {
        "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS}/{redis_db}",
        "AIRFLOW__CELERY__RESULT_BACKEND": pg_uri(db_name, "db+postgresql"),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
    }


def _drop_queue_keys(redis_db: int, queue: str) -> None:
    """Remove what Celery kept in the broker for this stack's queue (bindings, the queue itself)."""
    with contextlib.suppress(Exception):  # best effort: the queue name is never reused anyway
        import redis

        host, _, port = REDIS.partition(":")
        client = redis.Redis(host=host, port=int(port or 6379), db=redis_db, socket_timeout=3)
        keys = list(client.scan_iter(match=f"*{queue}*", count=500))
        if keys:
            client.delete(*keys)


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """A SIGTERM (a CI runner giving up, the demo's trap) unwinds the stack instead of leaving
    its process groups and database behind."""

    def unwind(signum: int, frame: Any) -> None:
        raise SystemExit(f"got signal {signum}: stopping the Airflow stack")

    previous = signal.getsignal(signal.SIGTERM)
    replace = previous in (signal.SIG_DFL, None)
    if replace:
        signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        if replace:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def running_stack(
    extra_env: dict[str, str] | None = None,
    *,
    executor: str = "LocalExecutor",
    workers: Sequence[str] = (),
    concurrency: int = 2,
    parallelism: int = 3,
    redis_db: int = 13,
    prefix: str = "polyv_af",
    fail: Callable[[str], NoReturn] = _raise,
    keep_home: bool = False,
    auth_manager: str | None = None,
) -> Iterator[AirflowStack]:
    """api-server + scheduler + dag-processor + triggerer (+ one Celery worker per name in
    ``workers`` when ``executor`` is ``CeleryExecutor``) on the repo's dags/, until the block ends.

    Its own AIRFLOW_HOME and metadata DB ``<prefix>_<random>`` on the local PostgreSQL, dropped
    at the end (the home too, unless ``keep_home``). ``extra_env`` goes to every process
    (connections, Variables, ``POLYV_BUDGET_URL``). ``auth_manager`` is the class path set as
    ``[core] auth_manager`` (default: Airflow's SimpleAuthManager); the processes are started one
    by one, not through ``airflow standalone``, which would force the simple one.
    """
    import psycopg

    celery = executor == "CeleryExecutor"
    if celery and not workers:
        raise ValueError("the CeleryExecutor needs at least one worker")
    home = Path(tempfile.mkdtemp(prefix=f"{prefix.replace('_', '-')}-"))
    token = secrets.token_hex(5)
    db_name = f"{prefix}_{token}"
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    extra = dict(extra_env or {})
    if auth_manager:
        extra["AIRFLOW__CORE__AUTH_MANAGER"] = auth_manager
    if celery:
        extra = {**celery_env(db_name, redis_db=redis_db, queue=f"{prefix}_{token}", concurrency=concurrency), **extra}
    env = stack_env(home, db_name, api_url, executor=executor, parallelism=parallelism, extra=extra)
    stack = AirflowStack(home, db_name, env, fail)
    stack.api_url = api_url
    created = False
    with _sigterm_unwinds():
        try:
            pg_admin(f"CREATE DATABASE {db_name}")
            created = True
            stack.airflow("db", "migrate", timeout=240)
            stack.start("api-server", "--port", str(port), "--workers", "1")
            stack.start("scheduler")
            stack.start("dag-processor")
            stack.start("triggerer")
            for name in workers if celery else ():
                stack.start(
                    f"worker-{name}",
                    argv=[
                        "celery",
                        "worker",
                        "--celery-hostname",
                        f"{name}@%h",
                        "--concurrency",
                        str(concurrency),
                        "--queues",
                        env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"],
                        "--pid",
                        str(home / f"worker-{name}.pid"),
                        # Two workers on one machine cannot both serve logs on port 8793; the
                        # task logs are files under the shared AIRFLOW_HOME anyway.
                        "--skip-serve-logs",
                    ],
                    env={HOSTNAME_ENV: name, "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname"},
                )
                stack.workers.append(name)

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

            def ready(name: str) -> Callable[[], bool]:
                # Celery prints "<name>@<host> ready." once it consumes from the queue.
                def check() -> bool:
                    text = stack.log_tail(f"worker-{name}", 20000)
                    return f"{name}@" in text and " ready." in text

                return check

            for name in stack.workers:
                stack.wait_until(f"Celery worker {name} to be ready", ready(name), timeout=120)
            yield stack
        finally:
            stack.stop()
            if celery:
                _drop_queue_keys(redis_db, env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"])
            if created:
                with contextlib.suppress(psycopg.Error):
                    pg_admin(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
            if not keep_home:
                shutil.rmtree(home, ignore_errors=True)
