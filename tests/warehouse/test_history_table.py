"""One viewer's history from the report table on PostgreSQL, MariaDB and DuckDB, and the SQL of
docs/history.md run on each engine."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pyarrow as pa
import pytest

from polyv_connector.history import history_from_table
from polyv_connector.warehouse.report_table import SqlReportTable
from polyv_connector.warehouse.runs_table import RunsTable, RunStart
from tests.warehouse.engines import Engine
from tests.warehouse.support import report_batch

DOC = Path(__file__).resolve().parents[2] / "docs" / "history.md"
HOSTILE = ["v'1", 'v"2', "v%", "v_", "a\x00b", "v\\", "v`); DROP TABLE polyv_sync_report; --"]


def _batch(run_id: str, viewers: list[str], values: list[str], statuses: list[str]) -> pa.RecordBatch:
    batch = report_batch(run_id, len(viewers))
    for name, data in (("viewerId", viewers), ("customFieldValue", values), ("status", statuses)):
        i = batch.schema.get_field_index(name)
        batch = batch.set_column(i, batch.schema.field(i), pa.array(data, pa.string()))
    return batch


def _seed(engine: Engine, table: str = "polyv_sync_report") -> str:
    name = engine.table(table)
    kw = {"dialect": engine.dialect, **engine.table_kwargs()}
    runs = RunsTable(engine.connect, name + "_runs", **kw)
    for run_id, values, statuses in (
        ("20261201T020000Z-aaaa", ["1", "2", "3"], ["sent", "sent", "sent"]),
        ("20261202T020000Z-bbbb", ["1", "9", "3"], ["unchanged", "failed", "sent"]),
    ):
        runs.start(RunStart(run_id=run_id, started_at=dt.datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ")))
        sink = SqlReportTable(engine.connect, name, **kw)
        sink.write(_batch(run_id, ["v-1", "v-2", "v-1"], values, statuses))
        sink.write(_batch(run_id, HOSTILE, [f"h{i}" for i in range(len(HOSTILE))], ["sent"] * len(HOSTILE)))
        sink.close()
    return name


def test_history_lists_each_run_of_the_viewer(engine: Engine):
    table = _seed(engine)
    kw = {"dialect": engine.dialect, **engine.table_kwargs()}
    entries = history_from_table(engine.connect, table, "v-1", **kw)
    assert [(e.run_id[:8], e.status, e.value) for e in entries] == [
        ("20261201", "sent", "1"),
        ("20261201", "sent", "3"),
        ("20261202", "unchanged", "1"),
        ("20261202", "sent", "3"),
    ]
    assert all(e.field == "PAY_STATUS" for e in entries)
    only = history_from_table(engine.connect, table, "v-2", "PAY_STATUS", **kw)
    assert [(e.status, e.value, e.reason_code) for e in only] == [
        ("sent", "2", None),
        ("failed", "9", None),
    ]
    assert history_from_table(engine.connect, table, "v-2", "OTHER", **kw) == []


def test_ids_match_exactly_even_where_the_collation_folds_case(engine: Engine):
    """MariaDB's default collation finds 'V-1' for 'v-1': history compares the bytes too."""
    table = _seed(engine)
    kw = {"dialect": engine.dialect, **engine.table_kwargs()}
    assert history_from_table(engine.connect, table, "V-1", **kw) == []
    assert history_from_table(engine.connect, table, "v-2", "pay_status", **kw) == []
    assert history_from_table(engine.connect, table, "v-1 ", **kw) == []  # PAD SPACE would ignore it


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_hostile_viewer_ids_match_themselves_only(engine: Engine, index: int):
    table = _seed(engine)
    kw = {"dialect": engine.dialect, **engine.table_kwargs()}
    entries = history_from_table(engine.connect, table, HOSTILE[index], **kw)
    assert [e.value for e in entries] == [f"h{index}", f"h{index}"]
    # A pattern character is no pattern: "v%" does not find "v-1", "v_" does not find "v'".
    assert history_from_table(engine.connect, table, "v", **kw) == []
    assert engine.rows(f"SELECT COUNT(*) FROM {table}")[0][0] == 2 * (3 + len(HOSTILE))  # nothing dropped


def _doc_queries(engine: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    dialect = {"mariadb": "mysql"}.get(engine, engine)
    return re.findall(rf"^```sql {dialect}\n(.*?)```", text, re.S | re.M)


def test_the_docs_sql_runs_on_each_engine(engine: Engine, request):
    queries = _doc_queries(engine.name)
    assert len(queries) == 2
    table = _seed(engine)
    if engine.name == "postgresql":
        import psycopg

        from tests.warehouse.support import PG_DSN

        schema = engine.prefix.rstrip(".")

        def connect():
            return psycopg.connect(PG_DSN, options=f"-c search_path={schema}")

    else:
        connect = engine.connect  # MariaDB: the database; DuckDB: the file's main schema
    params = {"viewer_id": "v-2", "field": "PAY_STATUS"}
    if engine.name == "mariadb":  # the docs' queries match exactly there too
        cur = engine.connect().cursor()
        cur.execute(queries[0].strip().rstrip(";"), {"viewer_id": "V-2"})
        assert cur.fetchall() == ()
    conn = connect()
    try:
        results = []
        for sql in queries:
            cur = conn.cursor()
            cur.execute(sql.strip().rstrip(";"), {k: v for k, v in params.items() if k in sql})
            results.append([tuple(r) for r in cur.fetchall()])
    finally:
        conn.close()
    expected = [
        (e.run_id, e.status, e.value)
        for e in history_from_table(engine.connect, table, "v-2", dialect=engine.dialect, **engine.table_kwargs())
    ]
    assert [(r[0], r[3], r[6]) for r in results[0]] == expected
    assert [(r[0], r[4], r[6]) for r in results[1]] == expected
    # The join finds each run's start in the runs table.
    assert {r[1].replace(tzinfo=None) for r in results[1]} == {dt.datetime(2026, 12, 1, 2), dt.datetime(2026, 12, 2, 2)}


def test_the_docs_parquet_sql_runs_on_duckdb(tmp_path, monkeypatch):
    import duckdb
    import pyarrow.parquet as pq

    text = DOC.read_text(encoding="utf-8")
    (sql,) = re.findall(r"### Parquet reports, with DuckDB.*?```sql\n(.*?)```", text, re.S)
    folder = tmp_path / "polyv_reports" / "polyv_viewer_sync_parquet"
    folder.mkdir(parents=True)
    pq.write_table(
        pa.Table.from_batches([_batch("20261201T020000Z-aaaa", ["v-1", "v-2"], ["a", "b"], ["sent"] * 2)]),
        folder / "r1.parquet",
    )
    pq.write_table(
        pa.Table.from_batches([_batch("20261202T020000Z-bbbb", ["v-2"], ["c"], ["sent"])]), folder / "r2.parquet"
    )
    monkeypatch.chdir(tmp_path)
    rows = duckdb.connect().execute(sql.strip().rstrip(";"), {"viewer_id": "v-2"}).fetchall()
    assert [(r[0][:8], r[5]) for r in rows] == [("20261201", "b"), ("20261202", "c")]
