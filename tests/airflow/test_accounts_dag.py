"""``polyv_viewer_sync_accounts``: one mapped task per account, run the way a worker runs it
(``airflow dags test --use-executor``), against a simulator with several accounts and real
PostgreSQL. The same DAG on the CeleryExecutor with two workers: tests/distributed.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from polyv_connector.simulator import PolyvSimulator
from polyv_connector.warehouse import report_table
from tests.airflow.support import AIRFLOW_HOME, FIELDS, PG_URI, conn_json, pg_exec, pg_rows

pytestmark = [pytest.mark.airflow, pytest.mark.postgres, pytest.mark.slow]

DAG_ID = "polyv_viewer_sync_accounts"
SECRETS = {"brand-a": "PLANTED-brand-a-s3cr3t-91", "brand-b": "PLANTED-brand-b-s3cr3t-92", "brand-c": "PLANTED-c-3"}


@pytest.fixture
def brands():
    with PolyvSimulator(apps=SECRETS, fields=FIELDS) as sim:
        yield sim


def _rows(table: str, brand: str, count: int) -> None:
    pg_exec(
        f"INSERT INTO {table} SELECT %s || '-viewer-' || i, 'PAY_STATUS', 'paid-' || i, %s "
        "FROM generate_series(1, %s) i",
        (brand, brand, count),
    )


def _task_states(run_id: str) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(AIRFLOW_HOME / "airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, map_index, state, rendered_map_index FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (DAG_ID, run_id),
        ).fetchall()
    return {f"{task}[{index}]" if index >= 0 else task: (state, label) for task, index, state, label in rows}


def test_each_account_is_a_mapped_task_and_one_failure_fails_only_its_own(run_dag, brands, pg_schema):
    source = f"{pg_schema}.attrs"
    pg_exec(f"CREATE TABLE {source} (viewer_id text, custom_field_id text, custom_field_value text, brand text)")
    for brand, count in (("brand-a", 30), ("brand-b", 20), ("brand-c", 10), ("brand-x", 5)):
        _rows(source, brand, count)
    pg_exec(f"CREATE VIEW {pg_schema}.brand_a AS SELECT * FROM {source} WHERE brand = 'brand-a'")
    # A report table as release 0.1 made it: schema version 1, no appId; its rows must stay.
    report = f"{pg_schema}.report"
    columns = ", ".join(
        f'"{c.name}" {"bigint" if c.kind == "bigint" else "timestamp" if c.kind == "timestamp" else "text"}'
        for c in report_table.SCHEMA.columns(1)
    )
    pg_exec(f"CREATE TABLE {report} ({columns})")
    pg_exec(f'INSERT INTO {report} ("rowNumber", status, attempts, "runId") VALUES (1, %s, 1, %s)', ("sent", "old"))

    env = {
        "AIRFLOW_CONN_POLYV_WAREHOUSE": PG_URI,
        "AIRFLOW_CONN_POLYV_BRAND_A": conn_json(brands.base_url, secret=SECRETS["brand-a"], login="brand-a"),
        "AIRFLOW_CONN_POLYV_BRAND_B": conn_json(brands.base_url, secret=SECRETS["brand-b"], login="brand-b"),
        # Listed, but its secret is wrong: POLYV refuses it.
        "AIRFLOW_CONN_POLYV_BRAND_C": conn_json(brands.base_url, secret="PLANTED-wrong-secret-93", login="brand-c"),
        # Defined on the workers, but not listed by the DAG author.
        "AIRFLOW_CONN_POLYV_BRAND_X": conn_json(brands.base_url, secret="PLANTED-x-s3cr3t-94", login="brand-x"),
        "AIRFLOW_VAR_POLYV_CONN_IDS": json.dumps(["polyv_brand_a", "polyv_brand_b", "polyv_brand_c"]),
    }
    accounts = [
        {"polyv_conn_id": "polyv_brand_a", "source_table": f"{pg_schema}.brand_a"},
        {"polyv_conn_id": "polyv_brand_b", "source_sql": f"SELECT * FROM {source} WHERE brand = 'brand-b'"},
        {"polyv_conn_id": "polyv_brand_c", "source_sql": f"SELECT * FROM {source} WHERE brand = 'brand-c'"},
        {"polyv_conn_id": "polyv_brand_x", "source_sql": f"SELECT * FROM {source} WHERE brand = 'brand-x'"},
    ]
    conf = {"accounts": accounts, "report_table": report, "state_table": f"{pg_schema}.state"}
    run = run_dag(DAG_ID, "2025-04-01", conf, env=env, timeout=240)

    assert run.state == "failed", run.output[-5000:]  # some account failed...
    states = _task_states(run.run_id)
    assert states == {  # ...but only its own task: one mapped task per account, labelled with it
        "accounts_to_sync": ("success", None),
        "sync_account[0]": ("success", "polyv_brand_a"),
        "sync_account[1]": ("success", "polyv_brand_b"),
        "sync_account[2]": ("failed", "polyv_brand_c"),
        "sync_account[3]": ("failed", "polyv_brand_x"),
    }
    logs = run.log_text()
    assert "polyv_conn_id: connection 'polyv_brand_x' is not an allowed POLYV connection" in logs
    assert "brand-x" not in brands.requests_by_account  # refused before its connection was read
    stored = {app for app, _, _ in brands.values}
    assert stored == {"brand-a", "brand-b"}
    assert brands.requests_by_account.get("brand-c", 0) <= 2  # the preflight, refused: nothing saved

    # One report table for every account, migrated in place: old rows kept, new rows tagged.
    assert pg_rows(
        f'SELECT "appId", status, count(*), count(DISTINCT "viewerId") FROM {report} GROUP BY 1, 2 ORDER BY 1, 2'
    )[:2] == [("brand-a", "sent", 30, 30), ("brand-b", "sent", 20, 20)]
    assert pg_rows(f'SELECT "appId", status FROM {report} WHERE "runId" = %s', ("old",)) == [(None, "sent")]
    assert pg_rows(f"SELECT version FROM {pg_schema}.polyv_schema_version WHERE table_name = 'report'") == [
        (report_table.SCHEMA.current,)
    ]
    assert pg_rows(f'SELECT DISTINCT "appId" FROM {report} WHERE "appId" IN (%s, %s)', ("brand-c", "brand-x")) in (
        [],
        [("brand-c",)],  # a refused account may report its rows as not attempted, never as sent
    )
    assert pg_rows(f"SELECT count(*) FROM {report} WHERE \"appId\" = 'brand-c' AND status = 'sent'") == [(0,)]
    # One state table, keyed by account (acct: a hash of the appId).
    from polyv_connector.state.table import account_hash

    counts = dict(pg_rows(f"SELECT acct, count(*) FROM {pg_schema}.state GROUP BY 1"))
    assert counts == {account_hash("brand-a"): 30, account_hash("brand-b"): 20}
    # LocalExecutor: every task runs on this host, the machine-wide budget is shared: no warning.
    assert "budget is not shared" not in logs and "several hosts" not in logs
    for secret in [*SECRETS.values(), "PLANTED-wrong-secret-93", "PLANTED-x-s3cr3t-94"]:
        assert secret not in logs and secret not in run.output
