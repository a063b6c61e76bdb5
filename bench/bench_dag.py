"""Benchmark: the warehouse DAG's first run of a large input, as a real Airflow task (issue 22).

In a throwaway PostgreSQL schema: a source table of ``--items`` long-form items generated in SQL
(four fields per viewer) and an empty table of the same columns. The example DAG
``polyv_viewer_sync_warehouse`` (dags/) then runs through ``airflow dags test --use-executor``
(an ``AIRFLOW_HOME`` of its own, a SQLite metadata DB, an ``airflow api-server`` for the task's
supervisor: the path a worker takes, as tests/stack.py runs the DAGs), with its ``source_sql``
param reading the whole table, once on the full input and once on the empty one, alternating
(``--pairs``; the order flips every pair), after one uncounted empty run (pair 0: the first
task compiles and caches its imports, seconds). Each run has a report table and a state table of its
own, created by the run (a first run: nothing in the state, nothing in the report). POLYV is the
bundled simulator in a process of its own (``polyv-sync simulator --latency-ms 20``); the
budget is ``--rps`` (100/s, the connection's ``max_rps``), batches of 1000 items.

Per run: the task's wall time (the task instance's duration in the metadata DB), the whole
``airflow dags test`` process, and the summary's ``phaseSeconds`` (readAndPlan, budgetWait,
sending, report, page). Then per tree: the task time (median full run minus median empty run),
the API-bound time (``ceil(items / 1000)`` requests at ``--rps``) and their ratio (issue 22's
target: <= 1.6). A full run is checked: every item sent, one report row per item.

With ``--baseline-tree DIR`` (e.g. main's tree from ``git archive``) each pair also runs the
same DAG with ``PYTHONPATH=DIR`` and that tree's dags/: a change's before and after,
alternating. The machine may be shared: the load average is printed per run. Out of CI. Run:

    PYTHONPATH=. .venv/bin/python bench/bench_dag.py [--items 1000000] [--pairs 2]
        [--latency-ms 20] [--rps 100] [--baseline-tree DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_DSN = os.environ.get("POLYV_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")
PG_URI = os.environ.get("POLYV_TEST_PG_URI", "postgresql://postgres@127.0.0.1:5432/test")
DAG_ID = "polyv_viewer_sync_warehouse"
TASK_ID = "sync_viewer_fields"
APP_ID, APP_SECRET = "bench-dag", "bench-dag-secret-6271"
FIELDS = ("PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER")
BATCH = 1000  # items per save request (the default batch size)
PHASES = ("readAndPlan", "budgetWait", "sending", "report", "page")
THIS, BASELINE = "this", "baseline"


@dataclass
class Run:
    tree: str
    pair: int
    input: str  # "full" or "empty"
    task_s: float = math.nan
    process_s: float = math.nan
    state: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    load: float = 0.0
    ok: bool = False  # succeeded, every item sent, one report row each


# ----------------------------------------------------------------- the warehouse


def pg(sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        cur = conn.execute(sql)  # type: ignore[arg-type,unused-ignore]
        return cur.fetchall() if cur.description else []


def make_source(schema: str, items: int) -> None:
    """``src`` with ``items`` rows (four fields per viewer, values of a few lengths) and ``empty``."""
    pg(f"CREATE SCHEMA {schema}")
    columns = "viewer_id text, custom_field_id text, custom_field_value text, updated_at timestamptz"
    pg(f"CREATE TABLE {schema}.src ({columns})")
    pg(f"CREATE TABLE {schema}.empty ({columns})")
    fields = "ARRAY[" + ", ".join(f"'{f}'" for f in FIELDS) + "]"
    pg(
        f"INSERT INTO {schema}.src SELECT 'viewer-' || lpad((i / {len(FIELDS)})::text, 8, '0'), "
        f"({fields})[i % {len(FIELDS)} + 1], 'value-' || (i % 977), timestamptz '2025-03-01 00:00+00' "
        f"FROM generate_series(0::bigint, {items - 1}) i"
    )
    pg(f"VACUUM ANALYZE {schema}.src")


# ----------------------------------------------------------------- processes


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop_group(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def wait_for(url: str, proc: subprocess.Popen[Any], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{url} did not come up: {log.read_text(errors='replace')[-3000:]}") from None
            time.sleep(0.3)


@contextlib.contextmanager
def simulator(latency_ms: float, workdir: Path) -> Iterator[str]:
    """``polyv-sync simulator`` in a process of its own (its CPU is not the task's)."""
    port = free_port()
    log = workdir / "simulator.log"
    env = {**os.environ, "POLYV_APP_ID": APP_ID, "POLYV_APP_SECRET": APP_SECRET}
    cmd = [str(BIN / "polyv-sync"), "simulator", "--port", str(port), "--latency-ms", f"{latency_ms:g}"]
    cmd += ["--fields", ",".join(FIELDS)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while "listening" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the simulator did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        stop_group(proc)


class Airflow:
    """One tree's Airflow: its own AIRFLOW_HOME (SQLite), migrated, and an api-server."""

    def __init__(self, name: str, tree: Path | None, workdir: Path, sim_url: str, rps: float) -> None:
        self.name = name
        self.home = workdir / f"airflow-{name}"
        self.home.mkdir()
        polyv = {"conn_type": "polyv", "login": APP_ID, "password": APP_SECRET, "host": sim_url}
        polyv["extra"] = json.dumps({"max_rps": rps})
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "PYTHONPATH"))}
        env.update(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__DAGS_FOLDER=str((tree or REPO) / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{self.home}/airflow.db",
            # One LocalExecutor worker, as the tests run DAGs (see tests/stack.py).
            AIRFLOW__CORE__PARALLELISM="1",
            AIRFLOW__CORE__UNIT_TEST_MODE="False",
            AIRFLOW_CONN_POLYV_DEFAULT=json.dumps(polyv),
            AIRFLOW_CONN_POLYV_WAREHOUSE=PG_URI,
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            PYTHONPATH=str(tree or REPO),
        )
        self.env = env
        self.proc: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        migrate = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"], env=self.env, capture_output=True, text=True, timeout=300
        )
        if migrate.returncode != 0:
            raise SystemExit(f"airflow db migrate failed: {migrate.stdout[-2000:]}{migrate.stderr[-2000:]}")
        port = free_port()
        log = self.home / "api-server.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "airflow"), "api-server", "--port", str(port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(f"http://127.0.0.1:{port}/api/v2/version", self.proc, log)
        self.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://127.0.0.1:{port}/execution/"

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)

    def run(
        self, logical_date: str, conf: dict[str, Any], log: Path, profile: Path | None = None
    ) -> tuple[float, str | None, float, Any]:
        """``airflow dags test``; returns the process's seconds, the run's state, the task's
        duration and its XCom. With ``profile``, under ``py-spy record`` (every thread, idle
        included, of the command and the processes it starts), collapsed stacks written there."""
        cmd = [str(BIN / "airflow"), "dags", "test", DAG_ID, logical_date, "--use-executor", "-c", json.dumps(conf)]
        if profile is not None:
            spy = [str(BIN / "py-spy"), "record", "--subprocesses", "--threads", "--idle", "--format", "raw"]
            cmd = [*spy, "--rate", "50", "-o", str(profile), "--", *cmd]
        started = time.perf_counter()
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                proc.wait(timeout=900)
            except subprocess.TimeoutExpired:
                stop_group(proc)
        process_s = time.perf_counter() - started
        db = sqlite3.connect(self.home / "airflow.db")
        try:
            found = db.execute(
                "SELECT run_id, state FROM dag_run WHERE dag_id = ? AND logical_date LIKE ? ORDER BY id DESC LIMIT 1",
                (DAG_ID, f"{logical_date}%"),
            ).fetchone()
            if not found:
                return process_s, None, math.nan, None
            run_id, state = found
            ti = db.execute(
                "SELECT start_date, end_date FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
                (DAG_ID, run_id, TASK_ID),
            ).fetchone()
            value = db.execute(
                "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'return_value'", (DAG_ID, run_id)
            ).fetchone()
        finally:
            db.close()
        task_s = _seconds(ti[0], ti[1]) if ti and ti[0] and ti[1] else math.nan
        xcom = (json.loads(value[0]) if isinstance(value[0], (str, bytes)) else value[0]) if value else None
        return process_s, state, task_s, xcom


def _seconds(start: str, end: str) -> float:
    import datetime as dt

    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


# ----------------------------------------------------------------- the runs


def one_run(
    af: Airflow, schema: str, run: Run, n: int, items: int, workdir: Path, profile_dir: Path | None = None
) -> Run:
    tag = f"{run.tree}_{run.input}_{n}"
    report, state = f"{schema}.report_{tag}", f"{schema}.state_{tag}"
    table = "src" if run.input == "full" else "empty"
    conf = {
        "source_sql": f"SELECT viewer_id, custom_field_id, custom_field_value FROM {schema}.{table}",
        "report_table": report,
        "state_table": state,
    }
    # A logical date of its own per run: each is a new DAG run of a first sync.
    logical_date = f"2025-{1 + n // 28:02d}-{1 + n % 28:02d}"
    log = workdir / f"{tag}.log"
    profile = profile_dir / f"{tag}.txt" if profile_dir is not None and run.input == "full" else None
    run.process_s, run.state, run.task_s, xcom = af.run(logical_date, conf, log, profile)
    run.summary = xcom if isinstance(xcom, dict) else {}
    run.load = os.getloadavg()[0]
    expected = items if run.input == "full" else 0
    rows = pg(f"SELECT count(*) FROM {report}")[0][0] if run.state else -1
    sent = run.summary.get("counts", {}).get("sent")
    run.ok = run.state == "success" and sent == expected and rows == expected
    if not run.ok:
        tail = log.read_text(errors="replace")[-3000:]
        print(f"  !! {tag}: state {run.state}, sent {sent}, report rows {rows} (expected {expected}):\n{tail}")
    # Each run's tables go once checked: a first run each time, and the disk does not fill.
    pg(f"DROP TABLE IF EXISTS {report}, {state}, {report}_runs CASCADE")
    return run


def print_run(r: Run) -> None:
    phases = r.summary.get("phaseSeconds", {})
    cells = " ".join(f"{phases.get(p, math.nan):>11.2f}" for p in PHASES)
    duration = r.summary.get("durationSeconds", math.nan)
    print(
        f"{r.tree:<9}{r.pair:>5} {r.input:<6}{r.task_s:>9.2f}{r.process_s:>10.2f}{duration:>10.2f} {cells}"
        f"{r.load:>6.2f}",
        flush=True,
    )


def report(runs: list[Run], items: int, rps: float) -> dict[str, Any]:
    api_s = math.ceil(items / BATCH) / rps
    out: dict[str, Any] = {"api_bound_s": api_s, "trees": {}}
    print(f"API-bound time: {math.ceil(items / BATCH):,} requests of {BATCH} items at {rps:g}/s = {api_s:.2f} s")
    for tree in dict.fromkeys(r.tree for r in runs):
        full = [r.task_s for r in runs if r.tree == tree and r.input == "full"]
        empty = [r.task_s for r in runs if r.tree == tree and r.input == "empty"]
        task = statistics.median(full) - statistics.median(empty)
        print(
            f"{tree}: task time {task:.2f} s = median full {statistics.median(full):.2f} s - median empty "
            f"{statistics.median(empty):.2f} s; ratio to the API-bound time {task / api_s:.2f} (goal <= 1.6)"
        )
        out["trees"][tree] = {"full": full, "empty": empty, "task_s": task, "ratio": task / api_s}
    if len(out["trees"]) == 2:
        this, base = out["trees"][THIS]["task_s"], out["trees"][BASELINE]["task_s"]
        print(f"task time this/baseline: {this / base:.2f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--rps", type=float, default=100.0)
    parser.add_argument("--baseline-tree", type=Path, help="run this tree too (PYTHONPATH, its dags/), alternating")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and the schema")
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="record each full run with py-spy (pip install py-spy; not a dependency) into DIR: "
        "its wall time then includes the sampling",
    )
    parser.add_argument(
        "--warm-up",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one uncounted empty run per tree first (default; --no-warm-up for a quick check)",
    )
    args = parser.parse_args()

    trees: dict[str, Path | None] = {THIS: None}
    if args.baseline_tree:
        trees[BASELINE] = args.baseline_tree.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="polyv-bench-dag-"))
    schema = f"bench_dag_{uuid.uuid4().hex[:8]}"
    print(
        f"bench_dag: {DAG_ID}, {args.items:,} items, {args.latency_ms:g} ms, {args.rps:g} req/s, "
        f"{args.pairs} pair(s), trees {list(trees)}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
        flush=True,
    )
    airflows: dict[str, Airflow] = {}
    runs: list[Run] = []
    try:
        started = time.perf_counter()
        make_source(schema, args.items)
        print(f"source table: {args.items:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
        with simulator(args.latency_ms, workdir) as sim_url:
            for name, tree in trees.items():
                airflows[name] = Airflow(name, tree, workdir, sim_url, args.rps)
                airflows[name].start()
            head = f"{'tree':<9}{'pair':>5} {'input':<6}{'task s':>9}{'process s':>10}{'summary s':>10} "
            print(head + " ".join(f"{p:>11}" for p in PHASES) + f"{'load':>6}", flush=True)
            n = 0
            # A first task of each tree compiles and caches its imports (seconds): not counted.
            for name in trees if args.warm_up else ():
                print_run(one_run(airflows[name], schema, Run(name, 0, "empty"), n, args.items, workdir))
                n += 1
            for pair in range(1, args.pairs + 1):
                inputs = ("full", "empty") if pair % 2 else ("empty", "full")
                names = list(trees) if pair % 2 else list(reversed(trees))
                for name in names:
                    for kind in inputs:
                        run = Run(name, pair, kind)
                        runs.append(one_run(airflows[name], schema, run, n, args.items, workdir, args.py_spy))
                        print_run(runs[-1])
                        n += 1
        figures = report(runs, args.items, args.rps)
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if not all(r.ok for r in runs):
            raise SystemExit("some runs failed (see !! above): their figures mean nothing")
        if args.json:
            figures["runs"] = [r.__dict__ for r in runs]
            args.json.write_text(json.dumps(figures, indent=1, default=str))
    finally:
        for af in airflows.values():
            af.stop()
        if not args.keep:
            pg(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept: {workdir}, schema {schema}")


if __name__ == "__main__":
    main()
