"""The connector on a real distributed executor: Airflow's CeleryExecutor with two workers.

``scripts/demo_distributed.sh`` (``make demo-distributed``) runs :func:`main`; the
``distributed`` test (tests/distributed) runs :func:`run_demo` and asserts on its result, so
the demo and the test are one piece of code. What it does:

1. a warehouse database of its own on the local PostgreSQL, with generated rows for three POLYV
   accounts (a table each) and a larger table for one account split into partitions;
2. the POLYV simulator (``python -m polyv_connector.simulator``) with the three accounts and a
   rate limit just above the request budget, so any overshoot would be a block;
3. a whole Airflow (scripts/airflow_stack.py): metadata DB in a PostgreSQL database of its own,
   Redis as the Celery broker, api-server, scheduler, dag-processor and two Celery workers
   (``w1``, ``w2``), each a separate process with a host name of its own; every process gets
   the connections ``polyv_brand_a/b/c`` (and ``polyv_default``, the partitioned DAG's account),
   ``polyv_warehouse``, the Variable ``polyv_conn_ids`` and ``POLYV_BUDGET_URL=redis://...``;
4. triggers ``polyv_viewer_sync_accounts`` over the three accounts and, when its DAG file is
   there, ``polyv_viewer_sync_partitioned``, both at once; waits for them;
5. reads back each mapped task (account or partition, worker host, counts, duration), the report
   tables and the simulator's counters; then stops everything and drops both databases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from scripts import airflow_stack
from scripts.airflow_stack import REDIS, AirflowStack, StackError, pg_admin, pg_dsn, pg_uri

ACCOUNTS_DAG = "polyv_viewer_sync_accounts"
PARTITIONED_DAG = "polyv_viewer_sync_partitioned"
#: appId -> the Airflow connection of that account.
ACCOUNTS = {"brand-a": "polyv_brand_a", "brand-b": "polyv_brand_b", "brand-c": "polyv_brand_c"}
#: The account the partitioned DAG syncs (through ``polyv_default``), with its own state table.
PARTITIONED_APP = "brand-a"
FIELDS = ("PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER")
WORKERS = ("w1", "w2")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and rates of one demo run (small by default: the test runs it on 2 cores)."""

    rows_per_account: int = 300
    partitioned_rows: int = 800
    partitions: int = 4
    #: Items per request (a connection extra): small, so that a few hundred rows make requests.
    batch_size: int = 25
    #: The whole IP's request budget (POLYV_BUDGET_RPS on every worker).
    budget_rps: float = 5.0
    #: Redis db numbers: the Celery broker's (queues named per stack) and the budget's.
    broker_db: int = 13
    budget_db: int = 14
    concurrency: int = 2
    timeout_s: float = 240.0
    with_partitioned: bool | None = None  # None: when its DAG file exists

    @property
    def window_limit(self) -> int:
        """The most requests the budget lets through in any 10-s window (docs/budget.md)."""
        return math.floor(10 * self.budget_rps + self.budget_rps / 10) + 1


@dataclass
class TaskRow:
    """One task instance of a demo run, as the per-task table shows it."""

    dag_id: str
    run_id: str
    task_id: str
    label: str  # the account's connection id, or "partition k/N"
    hostname: str
    state: str
    try_number: int
    duration_s: float | None
    summary: dict[str, Any] | None  # the task's XCom (sync summary), if any

    @property
    def counts(self) -> dict[str, int]:
        return dict((self.summary or {}).get("counts") or {})


@dataclass
class DemoResult:
    runs: dict[str, dict[str, Any]]  # dag_id -> its dag_run row
    tasks: list[TaskRow]
    sim_stats: dict[str, int]
    #: dag_id -> every source key (appId, viewerId, customFieldId): what each run must report once.
    source: dict[str, Counter[tuple[str, str, str]]]
    #: dag_id -> the report rows of its run: (appId, viewerId, customFieldId, runId, airflowRunId, status).
    report: dict[str, list[tuple[Any, ...]]]
    config: DemoConfig
    worker_hosts: tuple[str, ...]
    seconds: dict[str, float] = field(default_factory=dict)
    budget_warnings: int = 0
    #: Occurrences of an appSecret in the task and process logs (must be 0).
    secret_leaks: int = 0
    #: Celery worker -> the tasks its own log says it executed.
    worker_executed: dict[str, int] = field(default_factory=dict)

    def sync_tasks(self) -> list[TaskRow]:
        return [t for t in self.tasks if t.task_id.startswith("sync_")]

    def final_run_ids(self, dag_id: str) -> set[str]:
        """The engine runIds of the tries that finished the run's sync tasks (their XCom)."""
        return {t.summary["runId"] for t in self.sync_tasks() if t.dag_id == dag_id and t.summary}

    def reported(self, dag_id: str) -> Counter[tuple[str, str, str]]:
        """How often each key is in the report rows of the run's final tries."""
        final = self.final_run_ids(dag_id)
        return Counter((r[0], r[1], r[2]) for r in self.report[dag_id] if r[3] in final)

    def duplicates_within_a_try(self, dag_id: str) -> int:
        """Keys reported more than once by one try (a retry has a runId of its own)."""
        per_try = Counter((r[3], r[0], r[1], r[2]) for r in self.report[dag_id])
        return sum(n - 1 for n in per_try.values() if n > 1)

    def checks(self) -> dict[str, bool]:
        """What the demo claims, each as one yes/no (the test asserts each with its details)."""
        hosts = {t.hostname for t in self.sync_tasks()}
        return {
            "every DAG run succeeded": all(r["state"] == "success" for r in self.runs.values()),
            "sync tasks ran on every worker": set(self.worker_hosts) <= hosts
            and all(self.worker_executed.get(w, 0) > 0 for w in self.worker_hosts),
            "every source row reported exactly once per run": all(
                self.reported(d) == self.source[d] for d in self.runs
            ),
            "no key twice within one try": all(self.duplicates_within_a_try(d) == 0 for d in self.runs),
            "no 10-s window above the budget": self.sim_stats.get("peak_window_requests", 0)
            <= self.config.window_limit,
            "no block": self.sim_stats.get("blocked_responses", 0) == 0,
            "no 'budget not shared' warning (Redis budget)": self.budget_warnings == 0,
            "no appSecret in any log": self.secret_leaks == 0,
        }


# ---- the pieces ------------------------------------------------------------------------------------
def _pg_exec(dbname: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    import psycopg

    with psycopg.connect(pg_dsn(dbname), autocommit=True) as conn:
        conn.execute(sql, params or None)  # type: ignore[arg-type,unused-ignore]


def _pg_rows(dbname: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(pg_dsn(dbname), autocommit=True) as conn:
        return conn.execute(sql, params or None).fetchall()  # type: ignore[arg-type,unused-ignore]


def generate_warehouse(dbname: str, cfg: DemoConfig) -> dict[str, Counter[tuple[str, str, str]]]:
    """One table per account (``attrs_brand_a``...) and ``attrs_large`` for the partitioned DAG:
    long-form rows, one field per viewer. Returns each DAG's source keys."""
    fields = "ARRAY[" + ", ".join(f"'{f}'" for f in FIELDS) + "]"
    accounts: Counter[tuple[str, str, str]] = Counter()
    for app in ACCOUNTS:
        table = "attrs_" + app.replace("-", "_")
        _pg_exec(dbname, f"CREATE TABLE {table} (viewer_id text, custom_field_id text, custom_field_value text)")
        _pg_exec(
            dbname,
            f"INSERT INTO {table} SELECT %s || '-viewer-' || i, ({fields})[1 + i %% 4], 'value-' || i "
            "FROM generate_series(1, %s) i",
            (app, cfg.rows_per_account),
        )
        accounts.update((app, v, f) for v, f in _pg_rows(dbname, f"SELECT viewer_id, custom_field_id FROM {table}"))
    source = {ACCOUNTS_DAG: accounts}
    if cfg.with_partitioned:
        _pg_exec(dbname, "CREATE TABLE attrs_large (viewer_id text, custom_field_id text, custom_field_value text)")
        _pg_exec(
            dbname,
            f"INSERT INTO attrs_large SELECT 'large-viewer-' || i, ({fields})[1 + i %% 4], 'tier-' || (i %% 7) "
            "FROM generate_series(1, %s) i",
            (cfg.partitioned_rows,),
        )
        rows = _pg_rows(dbname, "SELECT viewer_id, custom_field_id FROM attrs_large")
        source[PARTITIONED_DAG] = Counter((PARTITIONED_APP, v, f) for v, f in rows)
    return source


@contextlib.contextmanager
def simulator(app_secrets: dict[str, str], cfg: DemoConfig, log_path: Path) -> Iterator[str]:
    """The POLYV simulator in a process of its own (a separate service, as POLYV is); its URL.

    Its rate limit is the budget's window limit plus a little: a budget that let more through
    would be answered with a block, which the demo reports."""
    args = [sys.executable, "-m", "polyv_connector.simulator", "--port", "0", "--fields", ",".join(FIELDS)]
    args += ["--max-requests", str(cfg.window_limit + 2), "--window-s", "10", "--block-s", "60"]
    for app, secret in app_secrets.items():  # test credentials, generated for this run
        args += ["--account", f"{app}:{secret}"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on " not in line:
            raise StackError(f"the simulator did not start: {line!r}; see {log_path}")
        yield line.split("listening on ")[1].split()[0]
    finally:
        airflow_stack.stop_group(proc)


def sim_stats(base_url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{base_url}/_sim/stats", timeout=5) as answer:
        stats: dict[str, int] = json.loads(answer.read())
        return stats


def polyv_conn(app: str, secret: str, base_url: str, cfg: DemoConfig) -> str:
    return json.dumps(
        {
            "conn_type": "polyv",
            "login": app,
            "password": secret,
            "host": base_url,
            "extra": {"batch_size": cfg.batch_size},
        }
    )


def stack_environment(base_url: str, app_secrets: dict[str, str], wh_db: str, cfg: DemoConfig) -> dict[str, str]:
    """What every Airflow process (above all each worker) needs: connections, the allowlist, the budget."""
    env = {
        "AIRFLOW_CONN_POLYV_WAREHOUSE": pg_uri(wh_db),
        "AIRFLOW_CONN_POLYV_DEFAULT": polyv_conn(PARTITIONED_APP, app_secrets[PARTITIONED_APP], base_url, cfg),
        "AIRFLOW_VAR_POLYV_CONN_IDS": json.dumps(sorted(ACCOUNTS.values())),
        # One budget for every worker: without it each host would keep its own (and warn).
        "POLYV_BUDGET_URL": f"redis://{REDIS}/{cfg.budget_db}",
        "POLYV_BUDGET_RPS": f"{cfg.budget_rps:g}",
    }
    for app, conn_id in ACCOUNTS.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = polyv_conn(app, app_secrets[app], base_url, cfg)
    return env


def demo_confs(cfg: DemoConfig) -> dict[str, dict[str, Any]]:
    """dag_id -> the conf the demo triggers it with (tests/test_demo_conf.py holds each to its
    DAG's params and trigger-time rules)."""
    confs: dict[str, dict[str, Any]] = {
        ACCOUNTS_DAG: {
            "accounts": [
                {"polyv_conn_id": conn_id, "source_table": "attrs_" + app.replace("-", "_")}
                for app, conn_id in ACCOUNTS.items()
            ],
            "report_table": "report_accounts",
            "state_table": "state_accounts",
        }
    }
    if cfg.with_partitioned:
        confs[PARTITIONED_DAG] = {
            "partitions": cfg.partitions,
            "source_sql": "SELECT viewer_id, custom_field_id, custom_field_value FROM attrs_large",
            "report_table": "report_partitioned",
            "state_table": "state_partitioned",
        }
    return confs


def trigger(stack: AirflowStack, cfg: DemoConfig) -> dict[str, str]:
    """Unpause and trigger the DAGs at once; dag_id -> run_id."""
    confs = demo_confs(cfg)
    for dag_id in confs:
        stack.wait_for_dag(dag_id, timeout=120)
        stack.airflow("dags", "unpause", dag_id, timeout=90)
    run_ids = {}
    for dag_id, conf in confs.items():
        run_id = f"demo__{dag_id}__{secrets.token_hex(3)}"
        stack.airflow("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf), timeout=90)
        run_ids[dag_id] = run_id
    return run_ids


def read_tasks(stack: AirflowStack, dag_id: str, run_id: str) -> list[TaskRow]:
    rows = []
    for ti in stack.task_instances(dag_id, run_id):
        label = ti["rendered_map_index"] or (f"map {ti['map_index']}" if ti["map_index"] >= 0 else "")
        if dag_id == PARTITIONED_DAG and ti["map_index"] >= 0:
            label = f"partition {ti['map_index']}"
        summary = stack.xcom(dag_id, run_id, ti["task_id"], map_index=ti["map_index"])
        rows.append(
            TaskRow(
                dag_id=dag_id,
                run_id=run_id,
                task_id=ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""),
                label=label,
                hostname=ti["hostname"] or "",
                state=ti["state"] or "",
                try_number=int(ti["try_number"] or 0),
                duration_s=float(ti["duration"]) if ti["duration"] is not None else None,
                summary=summary if isinstance(summary, dict) else None,
            )
        )
    return rows


def read_report(wh_db: str, table: str, airflow_run_id: str) -> list[tuple[Any, ...]]:
    return _pg_rows(
        wh_db,
        f'SELECT "appId", "viewerId", "customFieldId", "runId", "airflowRunId", status FROM {table} '
        'WHERE "airflowRunId" = %s',
        (airflow_run_id,),
    )


# ---- the whole run ---------------------------------------------------------------------------------
def run_demo(
    cfg: DemoConfig | None = None,
    *,
    fail: Callable[[str], NoReturn] | None = None,
    say: Callable[[str], None] = print,
    keep_home: bool = False,
) -> DemoResult:
    """Run the demo end to end (see the module docstring) and return what it saw.

    Everything it starts is stopped, and both databases dropped, before it returns or raises.
    """
    cfg = cfg or DemoConfig()
    if cfg.with_partitioned is None:
        cfg = DemoConfig(
            **{**cfg.__dict__, "with_partitioned": (airflow_stack.DAGS / f"{PARTITIONED_DAG}.py").exists()}
        )
    started = time.monotonic()
    seconds: dict[str, float] = {}
    token = secrets.token_hex(4)
    wh_db = f"polyv_dist_wh_{token}"
    app_secrets = {app: f"demo-{app}-{secrets.token_hex(8)}" for app in ACCOUNTS}
    log_dir = Path(tempfile.mkdtemp(prefix="polyv-dist-sim-"))
    pg_admin(f"CREATE DATABASE {wh_db}")
    try:
        source = generate_warehouse(wh_db, cfg)
        sizes = ", ".join(f"{d}: {sum(c.values())} rows" for d, c in source.items())
        say(f"==> warehouse database {wh_db}: {sizes}")
        with simulator(app_secrets, cfg, log_dir / "simulator.log") as base_url:
            say(f"==> POLYV simulator at {base_url} (appIds {', '.join(ACCOUNTS)}; limit {cfg.window_limit + 2}/10 s)")
            env = stack_environment(base_url, app_secrets, wh_db, cfg)
            say(
                f"==> Airflow: CeleryExecutor, Redis broker db {cfg.broker_db}, workers {', '.join(WORKERS)} "
                f"(concurrency {cfg.concurrency} each), budget {env['POLYV_BUDGET_URL']} at {cfg.budget_rps:g}/s"
            )
            with airflow_stack.running_stack(
                env,
                executor="CeleryExecutor",
                workers=WORKERS,
                concurrency=cfg.concurrency,
                parallelism=2 * cfg.concurrency * len(WORKERS),
                redis_db=cfg.broker_db,
                prefix="polyv_dist",
                fail=fail or airflow_stack._raise,
                keep_home=keep_home,
            ) as stack:
                seconds["stack up"] = time.monotonic() - started
                say(f"==> up in {seconds['stack up']:.0f} s (AIRFLOW_HOME {stack.home}); triggering")
                run_ids = trigger(stack, cfg)
                t0 = time.monotonic()
                runs = {}
                for dag_id, run_id in run_ids.items():
                    finished = stack.wait_for_runs(dag_id, 1, timeout=cfg.timeout_s)
                    runs[dag_id] = next(r for r in finished if r["run_id"] == run_id)
                seconds["runs"] = time.monotonic() - t0
                tasks = [t for d, r in run_ids.items() for t in read_tasks(stack, d, r)]
                logs = "\n".join(stack.task_log_text(d, r) for d, r in run_ids.items())
                warnings = logs.count("POLYV budget: the request budget is")
                # Every log the fleet wrote (tasks, workers, scheduler, api-server): no secret.
                everything = logs + "".join(stack.log_tail(name, 10**8) for name in stack.procs)
                leaks = sum(everything.count(secret) for secret in app_secrets.values())
                stats = sim_stats(base_url)
                # Independent of task_instance.hostname: each Celery worker's own log of what it ran.
                done = re.compile(r"Task execute_workload\[[^\]]+\] succeeded")

                def executed_by_worker() -> dict[str, int]:
                    return {n: len(done.findall(stack.log_tail(f"worker-{n}", 10**8))) for n in stack.workers}

                # A worker logs "succeeded" once the workload returns, which may be a moment after
                # Airflow recorded the task: give the last ones a few seconds.
                deadline = time.monotonic() + 10
                executed = executed_by_worker()
                while sum(executed.values()) < len(tasks) and time.monotonic() < deadline:
                    time.sleep(0.5)
                    executed = executed_by_worker()
            report = {
                ACCOUNTS_DAG: read_report(wh_db, "report_accounts", run_ids[ACCOUNTS_DAG]),
            }
            if cfg.with_partitioned:
                report[PARTITIONED_DAG] = read_report(wh_db, "report_partitioned", run_ids[PARTITIONED_DAG])
    finally:
        with contextlib.suppress(Exception):
            pg_admin(f"DROP DATABASE IF EXISTS {wh_db} WITH (FORCE)")
        if not keep_home:
            shutil.rmtree(log_dir, ignore_errors=True)
    seconds["total"] = time.monotonic() - started
    return DemoResult(runs, tasks, stats, source, report, cfg, WORKERS, seconds, warnings, leaks, executed)


def task_table(result: DemoResult) -> str:
    """The per-task table: account or partition, worker host, counts, duration."""
    head: tuple[str, ...] = ("DAG", "task", "account / partition", "worker host", "state", "try", "items", "sent")
    head += ("unchanged",)
    head += ("failed", "seconds")
    lines: list[tuple[str, ...]] = [head]
    for t in result.tasks:
        c = t.counts
        items = (t.summary or {}).get("items")
        lines.append(
            (
                t.dag_id.removeprefix("polyv_viewer_sync_"),
                t.task_id,
                t.label or "-",
                t.hostname,
                t.state,
                str(t.try_number),
                "" if items is None else str(items),
                str(c.get("sent", "")) if c else "",
                str(c.get("unchanged", "")) if c else "",
                str(c.get("failed", 0) + c.get("in_doubt", 0) + c.get("not_attempted", 0)) if c else "",
                "" if t.duration_s is None else f"{t.duration_s:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows-per-account", type=int, default=DemoConfig.rows_per_account)
    parser.add_argument("--partitioned-rows", type=int, default=DemoConfig.partitioned_rows)
    parser.add_argument("--partitions", type=int, default=DemoConfig.partitions)
    parser.add_argument("--budget-rps", type=float, default=DemoConfig.budget_rps)
    parser.add_argument("--keep-home", action="store_true", help="keep the AIRFLOW_HOME (logs) afterwards")
    args = parser.parse_args(argv)
    cfg = DemoConfig(
        rows_per_account=args.rows_per_account,
        partitioned_rows=args.partitioned_rows,
        partitions=args.partitions,
        budget_rps=args.budget_rps,
    )
    result = run_demo(cfg, keep_home=args.keep_home)
    print()
    print(task_table(result))
    print()
    for dag_id, run in result.runs.items():
        print(f"{dag_id}: {run['state']} ({run['run_id']})")
    stats = result.sim_stats
    executed = ", ".join(f"{w} {n}" for w, n in result.worker_executed.items())
    print(f"tasks each Celery worker's own log shows as succeeded: {executed} (of {len(result.tasks)})")
    print(
        f"simulator: {stats.get('api_requests')} API requests, peak {stats.get('peak_window_requests')} in a 10-s "
        f"window (budget allows {result.config.window_limit}), {stats.get('blocked_responses')} blocked"
    )
    checks = result.checks()
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {name}")
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    print(f"time: {timing}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
