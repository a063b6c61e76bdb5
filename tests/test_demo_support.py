"""scripts/demo_support.py: ``make demo`` shows the summary of the run it just made, found by
that run's id, and fails when that run failed, even when an older run left a good summary."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest

from scripts import demo_support

DAG, TASK = demo_support.DAG_ID, demo_support.TASK_ID


def _metadata_db(path: Path) -> str:
    """The two tables of Airflow's metadata DB the demo reads (their columns as Airflow 3 has them)."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE dag_run (id INTEGER PRIMARY KEY, dag_id TEXT, run_id TEXT, state TEXT)")
        conn.execute(
            "CREATE TABLE xcom (dag_run_id INTEGER, task_id TEXT, map_index INTEGER, key TEXT, dag_id TEXT, "
            "run_id TEXT, value TEXT, timestamp TEXT)"
        )
    return str(path)


def _run(db: str, run_id: str, state: str, summary: dict[str, object] | None, dag_id: str = DAG) -> None:
    with sqlite3.connect(db) as conn:
        cur = conn.execute("INSERT INTO dag_run (dag_id, run_id, state) VALUES (?, ?, ?)", (dag_id, run_id, state))
        if summary is not None:
            conn.execute(
                "INSERT INTO xcom VALUES (?, ?, -1, 'return_value', ?, ?, ?, ?)",
                (cur.lastrowid, TASK, dag_id, run_id, json.dumps(summary), run_id),
            )


def _good(run_id: str) -> dict[str, object]:
    return {
        "ok": True,
        "airflowRunId": run_id,
        "reportPath": f"/out/{run_id}.parquet",
        "runPage": f"/out/{run_id}.html",
    }


def test_the_run_made_after_the_mark_is_shown_with_its_report_and_run_page(tmp_path, capsys) -> None:
    db = _metadata_db(tmp_path / "airflow.db")
    _run(db, "manual__1", "success", _good("manual__1"))
    mark = demo_support.newest_run(db)
    _run(db, "manual__2", "success", _good("manual__2"))
    assert demo_support.show(db, mark) == 0
    out = capsys.readouterr().out
    assert "run manual__2: success" in out
    assert "report: /out/manual__2.parquet" in out and "run page: /out/manual__2.html" in out
    assert "manual__1" not in out


def test_a_failed_rerun_never_shows_the_older_runs_summary(tmp_path, capsys) -> None:
    db = _metadata_db(tmp_path / "airflow.db")
    _run(db, "manual__1", "success", _good("manual__1"))  # the first `make demo`
    mark = demo_support.newest_run(db)
    _run(db, "manual__2", "failed", None)  # the rerun failed before its task returned
    _run(db, "other", "success", _good("other"), dag_id="another_dag")  # not the demo's DAG
    assert demo_support.show(db, mark) == 1
    captured = capsys.readouterr()
    assert "manual__1" not in captured.out + captured.err and "other" not in captured.out
    assert "no summary for run manual__2" in captured.err


@pytest.mark.parametrize(("state", "ok"), [("failed", True), ("success", False)])
def test_a_failed_run_or_a_summary_not_ok_fails_the_demo(tmp_path, state: str, ok: bool) -> None:
    db = _metadata_db(tmp_path / "airflow.db")
    _run(db, "manual__1", state, {**_good("manual__1"), "ok": ok})
    assert demo_support.show(db, 0) == 1


def test_no_new_run_fails_the_demo(tmp_path, capsys) -> None:
    db = _metadata_db(tmp_path / "airflow.db")
    _run(db, "manual__1", "success", _good("manual__1"))
    assert demo_support.show(db, demo_support.newest_run(db)) == 1
    assert "no run of" in capsys.readouterr().err


def test_a_taken_port_is_replaced_by_a_free_one() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        assert demo_support.port(busy) != busy


def test_the_cli_demo_never_reads_a_summary_that_is_not_there(tmp_path, capsys) -> None:
    assert demo_support.cli_summary(str(tmp_path / "missing.json")) == 1
    assert "no summary" in capsys.readouterr().err


def test_an_exit_status_is_explained_from_the_one_table() -> None:
    from polyv_connector import exit_codes

    assert demo_support.exit_status(3) == f"exit status 3: {exit_codes.ABORTED.meaning}"
