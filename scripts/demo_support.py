"""What the two demos (``make demo``, ``make demo-cli``) need besides the shell: the Airflow
demo's DAG conf, a port for the simulator, and the summary of the run a demo just made.

The shell scripts call it as ``python -m scripts.demo_support COMMAND ...``:

* ``port PREFERRED``: PREFERRED when nothing listens there, else a free port.
* ``mark DB``: the id of the newest DAG run in the Airflow metadata DB (SQLite), 0 when none:
  taken before ``airflow dags test``, so that ``show`` finds the run that command made.
* ``show DB MARK``: the demo DAG's run created after MARK: its id and state, the summary its task
  returned (the XCom), and where the report and the run page are, as the summary says. Exit 0
  only when the run succeeded and its summary says ok; never an older run's summary.
* ``exit-status CODE``: what the exit status CODE of ``polyv-sync run`` means (from
  :mod:`polyv_connector.exit_codes`, the one table of them).
* ``cli-summary SUMMARY_JSON``: the summary ``polyv-sync run --summary-json`` wrote, the items
  that were not sent (read from the report it names), and where the report and the run page are.

Standard library only, apart from pyarrow for ``cli-summary`` (the connector needs it anyway).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The DAG and task ``make demo`` runs.
DAG_ID = "polyv_viewer_sync_parquet"
TASK_ID = "sync_viewer_fields"
#: The DAG conf ``make demo`` passes to ``airflow dags test``; tests/test_demo_conf.py checks it
#: against the DAG's params and the operator's trigger-time rules.
CONF_PATH = Path(__file__).with_name("demo_airflow_conf.json")


def load_conf(path: Path = CONF_PATH) -> dict[str, Any]:
    conf = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(conf, dict):
        raise ValueError(f"{path}: a DAG conf is a JSON object")
    return conf


def port(preferred: int) -> int:
    """``preferred`` when no one listens on it (127.0.0.1), else a port the system picks."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        chosen: int = s.getsockname()[1]
        return chosen


def _connect(db: str) -> sqlite3.Connection:
    # Read-only: the demo only looks; a missing DB is an error, not a new empty file.
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def newest_run(db: str) -> int:
    with _connect(db) as conn:
        row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM dag_run").fetchone()
    return int(row[0])


def runs_after(db: str, mark: int, dag_id: str = DAG_ID) -> list[tuple[str, str]]:
    """(run_id, state) of every run of ``dag_id`` created after ``mark``, oldest first."""
    with _connect(db) as conn:
        rows = conn.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? AND id > ? ORDER BY id", (dag_id, mark)
        ).fetchall()
    return [(str(run_id), str(state)) for run_id, state in rows]


def summary_of(db: str, run_id: str, dag_id: str = DAG_ID, task_id: str = TASK_ID) -> dict[str, Any] | None:
    """The summary the task returned in run ``run_id`` (its ``return_value`` XCom), or None."""
    with _connect(db) as conn:
        row = conn.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND map_index = -1 "
            "AND key = 'return_value' ORDER BY timestamp DESC LIMIT 1",
            (dag_id, run_id, task_id),
        ).fetchone()
    if row is None:
        return None
    value = json.loads(row[0]) if isinstance(row[0], str | bytes) else row[0]
    return value if isinstance(value, dict) else None


def _print_summary(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, indent=2, ensure_ascii=False))


def show(db: str, mark: int) -> int:
    runs = runs_after(db, mark)
    if not runs:
        print(f"no run of {DAG_ID} was created: see the log above", file=sys.stderr)
        return 1
    run_id, state = runs[-1]
    print(f"run {run_id}: {state}")
    summary = summary_of(db, run_id)
    if summary is None:
        print(f"no summary for run {run_id}: the task did not get far enough; see the log above", file=sys.stderr)
        return 1
    _print_summary(summary)
    print(f"report: {summary.get('reportPath') or summary.get('report') or '(none)'}")
    print(f"run page: {summary.get('runPage') or '(none)'}")
    return 0 if state == "success" and summary.get("ok") is True else 1


def cli_summary(path: str) -> int:
    summary_file = Path(path)
    if not summary_file.is_file():
        print(f"no summary at {path}: the run did not get far enough; see the log above", file=sys.stderr)
        return 1
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    _print_summary(summary)
    report = summary.get("report")
    if report and Path(report).is_file():
        import pyarrow.parquet as pq

        rows = pq.read_table(report, columns=["rowNumber", "viewerId", "customFieldId", "status", "reason"])
        unsent = [r for r in rows.to_pylist() if r["status"] != "sent"]
        print(f"items not sent ({len(unsent)}):")
        for r in unsent:
            print(f"  row {r['rowNumber']}: {r['viewerId']!r} {r['customFieldId']!r}: {r['status']}: {r['reason']}")
    print(f"report: {report or '(none)'}")
    print(f"run page: {summary.get('runPage') or '(none)'}")
    return 0


def exit_status(code: int) -> str:
    from polyv_connector import exit_codes

    meaning = next((e.meaning for e in exit_codes.ALL if e.code == code), "not an exit status polyv-sync uses")
    return f"exit status {code}: {meaning}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    match args:
        case ["port", preferred]:
            print(port(int(preferred)))
            return 0
        case ["mark", db]:
            print(newest_run(db))
            return 0
        case ["show", db, mark]:
            return show(db, int(mark))
        case ["exit-status", code]:
            print(exit_status(int(code)))
            return 0
        case ["cli-summary", path]:
            return cli_summary(path)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
