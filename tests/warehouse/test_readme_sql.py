"""The README's SQL per engine, run exactly as written (its ```sql <engine>``` blocks) on each engine.

A real sync fills the report and state tables (named as the README names them, unqualified:
PostgreSQL through a search_path, MariaDB in the connection's database, DuckDB in its file);
then the README's report query must count that run's statuses, and its reset must empty the
account's state, so that the next run sends everything again.
"""

from __future__ import annotations

import re
from pathlib import Path

from polyv_connector.config import ColumnMapping, SyncOptions
from polyv_connector.progress import Progress
from polyv_connector.run import sync
from polyv_connector.sources.sql import SqlSource
from polyv_connector.state.table import SqlStateTable, account_hash
from polyv_connector.warehouse.report_table import SqlReportTable
from tests.conftest import APP_ID, FAST
from tests.warehouse.engines import Engine
from tests.warehouse.support import PG_DSN

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"^```sql (\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
MAPPING = ColumnMapping("viewer_id", "field_id", "value")


def readme_sql(dialect: str) -> list[str]:
    """The statements of the README's block for ``dialect``, comments dropped."""
    blocks = {name: body for name, body in BLOCK.findall(README.read_text(encoding="utf-8"))}
    body = "\n".join(line for line in blocks[dialect].splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def test_the_readme_has_a_block_per_engine() -> None:
    for dialect in ("postgresql", "mysql", "duckdb"):
        delete, select = readme_sql(dialect)
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


def test_readme_sql_runs_as_written(engine: Engine, sim, creds) -> None:
    engine = _unqualified(engine)
    engine.execute("CREATE TABLE attrs (viewer_id VARCHAR(64), field_id VARCHAR(64), value VARCHAR(64))")
    ph = engine.placeholder
    engine.executemany(
        f"INSERT INTO attrs VALUES ({ph}, {ph}, {ph})", [(f"r{i}", "VIP_LEVEL", f"v{i}") for i in range(20)]
    )
    first, state = _sync(engine, sim, creds)
    assert first.counts["sent"] == 20
    assert len(state.load()[0]) == 20
    delete, select = readme_sql(engine.dialect)

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
    # The README's account hash is the state table's, on both halves of the signed range.
    expr = delete.split("WHERE acct = ", 1)[1]
    for app in ("test-app", "app-1", "app-2", "app-3"):
        assert engine.rows(f"SELECT {expr.replace('<appId>', app)}") == [(account_hash(app),)]
    assert {account_hash(a) < 0 for a in ("test-app", "app-1", "app-2", "app-3")} == {True, False}
