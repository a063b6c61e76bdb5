"""The SQL in the docs, run exactly as written (their ```sql <engine>``` blocks) on each engine.

docs/warehouses.md, the SQL per engine: a real sync fills the report and state tables (named as
the guide names them, unqualified: PostgreSQL through a search_path, MariaDB in the
connection's database, DuckDB in its file); then the guide's report query must count that run's
statuses, and its reset must empty the account's state, so that the next run sends everything
again. README.md, the quickstart: its table and sample rows are created as written and read by
the warehouse DAG's default columns, and every item is one the simulator's account accepts.
(tests/docs/test_commands.py checks that no other SQL block is left unrun or unmarked.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from polyv_connector.config import ColumnMapping, SyncOptions
from polyv_connector.progress import Progress
from polyv_connector.run import sync
from polyv_connector.sources.sql import SqlSource
from polyv_connector.state.table import SqlStateTable, account_hash
from polyv_connector.warehouse.report_table import SqlReportTable
from tests.conftest import APP_ID, FAST
from tests.warehouse.engines import Engine
from tests.warehouse.support import PG_DSN

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "warehouses.md"
README = ROOT / "README.md"
BLOCK = re.compile(r"^```sql (\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
MAPPING = ColumnMapping("viewer_id", "field_id", "value")


def docs_sql(dialect: str, path: Path = GUIDE) -> list[str]:
    """The statements of the file's block for ``dialect`` (one per engine), comments dropped."""
    found = [body for name, body in BLOCK.findall(path.read_text(encoding="utf-8")) if name == dialect]
    assert len(found) == 1, f"{path.name}: expected one ```sql {dialect}``` block, found {len(found)}"
    body = "\n".join(line for line in found[0].splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def test_the_guide_has_a_block_per_engine() -> None:
    for dialect in ("postgresql", "mysql", "duckdb"):
        delete, select = docs_sql(dialect)
        assert delete.startswith("DELETE FROM polyv_sync_state") and "<appId>" in delete
        assert select.startswith("SELECT status") and "<runId>" in select


def _unqualified(engine: Engine) -> Engine:
    """The same database, reached so that unqualified names are the test's own tables."""
    if engine.name == "postgresql":
        import psycopg

        schema = engine.prefix.rstrip(".")
        return Engine(
            engine.name,
            engine.dialect,
            lambda: psycopg.connect(PG_DSN, options=f"-c search_path={schema}"),
            "",
            "%s",
            '"{}"',
        )
    return Engine(engine.name, engine.dialect, engine.connect, "", engine.placeholder, engine.identifier_format)


def _sync(engine: Engine, sim, creds):
    state = SqlStateTable(engine.connect, "polyv_sync_state", APP_ID, **engine.table_kwargs())
    source = SqlSource(engine.connect, table=engine.table("attrs"), **engine.source_kwargs())
    report = SqlReportTable(engine.connect, "polyv_sync_report", dialect=engine.dialect)
    options = SyncOptions(send=FAST, mapping=MAPPING)
    return sync(source, creds, options, report, state=state, progress=Progress(interval_s=1e9)), state


def test_the_guides_sql_runs_as_written(engine: Engine, sim, creds) -> None:
    engine = _unqualified(engine)
    engine.execute("CREATE TABLE attrs (viewer_id VARCHAR(64), field_id VARCHAR(64), value VARCHAR(64))")
    ph = engine.placeholder
    engine.executemany(
        f"INSERT INTO attrs VALUES ({ph}, {ph}, {ph})", [(f"r{i}", "VIP_LEVEL", f"v{i}") for i in range(20)]
    )
    first, state = _sync(engine, sim, creds)
    assert first.counts["sent"] == 20
    assert len(state.load()[0]) == 20
    delete, select = docs_sql(engine.dialect)

    assert engine.rows(select.replace("<runId>", first.run_id)) == [("sent", 20)]
    second, _ = _sync(engine, sim, creds)
    assert [(s, int(n)) for s, n in engine.rows(select.replace("<runId>", second.run_id))] == [("unchanged", 20)]

    engine.execute(delete.replace("<appId>", APP_ID))
    assert len(state.load()[0]) == 0
    before = sim.stats.save_requests
    third, _ = _sync(engine, sim, creds)
    assert third.counts["sent"] == 20 and sim.stats.save_requests > before
    # Another account's rows are not touched by the reset.
    engine.execute(delete.replace("<appId>", "another-app"))
    assert len(state.load()[0]) == 20
    # The guide's account hash is the state table's, on both halves of the signed range.
    expr = delete.split("WHERE acct = ", 1)[1]
    for app in ("test-app", "app-1", "app-2", "app-3"):
        assert engine.rows(f"SELECT {expr.replace('<appId>', app)}") == [(account_hash(app),)]
    assert {account_hash(a) < 0 for a in ("test-app", "app-1", "app-2", "app-3")} == {True, False}


@pytest.mark.postgres
def test_the_readme_quickstart_table_is_synced_as_written(pg_schema: str, sim, creds) -> None:
    """The quickstart's CREATE TABLE and INSERT run on PostgreSQL as written, the warehouse
    DAG's default columns read them, and every item names a field the simulator knows."""
    import psycopg

    from polyv_connector.simulator import DEFAULT_FIELDS

    statements = docs_sql("postgresql", README)

    def connect():
        return psycopg.connect(PG_DSN, options=f"-c search_path={pg_schema}")

    with connect() as conn:
        for statement in statements:
            conn.execute(statement)
    with connect() as conn:
        fields = {f for (f,) in conn.execute("SELECT DISTINCT custom_field_id FROM polyv_viewer_attributes")}
    assert fields and fields <= set(DEFAULT_FIELDS)
    source = SqlSource(connect, table="polyv_viewer_attributes")
    options = SyncOptions(send=FAST, mapping=ColumnMapping("viewer_id", "custom_field_id", "custom_field_value"))
    result = sync(source, creds, options, None, progress=Progress(interval_s=1e9))
    assert result.items >= 4 and result.counts["sent"] == result.items
