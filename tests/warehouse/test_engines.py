"""The warehouse as source, report and state store, on PostgreSQL, MariaDB and DuckDB alike.

Each test runs the real engine (:func:`polyv_connector.sync`) against the bundled
simulator, reading a real table through :class:`SqlSource` and keeping the report and the
state in real tables of the same database.
"""

from __future__ import annotations

import datetime as dt
import decimal
import time

import pytest

from polyv_connector.config import ColumnMapping, SyncOptions
from polyv_connector.progress import Progress
from polyv_connector.run import sync
from polyv_connector.sources.sql import SqlSource
from polyv_connector.state.table import SqlStateTable
from polyv_connector.warehouse.report_table import SqlReportTable
from tests.conftest import APP_ID, FAST
from tests.warehouse.engines import Engine

MAPPING = ColumnMapping("viewer_id", "field_id", "value")
N = 1_000
# Byte-exact text: CJK, a 4-byte emoji and a 4-byte CJK extension B character, a lower-case
# value whose case-only change must be sent (MariaDB's default collation would call it equal).
SPECIAL = {0: "已支付 😀", 1: "abc", 2: "𠀋 ext-B", 3: "trailing space "}


def _value(i: int) -> str:
    return SPECIAL.get(i, f"L{i % 97}")


def _load(engine: Engine, n: int = N) -> str:
    table = engine.table("attrs")
    engine.execute(f"CREATE TABLE {table} (viewer_id VARCHAR(64), field_id VARCHAR(64), value TEXT)")
    ph = engine.placeholder
    engine.executemany(
        f"INSERT INTO {table} VALUES ({ph}, {ph}, {ph})", [(f"v{i:05d}", "VIP_LEVEL", _value(i)) for i in range(n)]
    )
    return table


def _run(engine: Engine, sim, creds, table: str, *, in_warehouse: bool = False):
    state = SqlStateTable(
        engine.connect,
        engine.table("polyv_sync_state"),
        APP_ID,
        load_for_local_diff=not in_warehouse,
        **engine.table_kwargs(),
    )
    source = SqlSource(
        engine.connect, table=table, skip_unchanged=state if in_warehouse else None, **engine.source_kwargs()
    )
    report = SqlReportTable(engine.connect, engine.table("polyv_sync_report"), dialect=engine.dialect)
    options = SyncOptions(send=FAST, mapping=MAPPING, read_batch_rows=300)
    before = sim.stats.save_requests
    started = time.perf_counter()
    result = sync(source, creds, options, report, state=state, progress=Progress(interval_s=1e9))
    return result, sim.stats.save_requests - before, time.perf_counter() - started, report


def _report_counts(engine: Engine, run_id: str) -> dict[str, int]:
    q = engine.q
    rows = engine.rows(
        f"SELECT {q('status')}, COUNT(*) FROM {engine.table('polyv_sync_report')} "
        f"WHERE {q('runId')} = {engine.placeholder} GROUP BY {q('status')}",
        (run_id,),
    )
    return {status: int(count) for status, count in rows}


def test_first_sync_rerun_changes_and_diff_in_warehouse(engine: Engine, sim, creds) -> None:
    table = _load(engine)

    # First sync: every row sent, byte-equal in POLYV, every row in the report table.
    first, requests, _, report = _run(engine, sim, creds, table)
    assert first.counts["sent"] == N and first.ok
    assert report.write_path == {"postgresql": "copy", "mariadb": "multirow", "duckdb": "arrow"}[engine.name]
    values = sim.values
    assert all(values[(APP_ID, f"v{i:05d}", "VIP_LEVEL")] == _value(i) for i in range(N))
    assert _report_counts(engine, first.run_id) == {"sent": N}

    # Nothing changed: no request at all, in seconds.
    rerun, requests, seconds, _ = _run(engine, sim, creds, table)
    assert rerun.counts["unchanged"] == N and requests == 0 and seconds < 20
    assert _report_counts(engine, rerun.run_id) == {"unchanged": N}

    # 1% changed, plus a case-only change: exactly those are sent.
    ph = engine.placeholder
    changed = [f"v{i:05d}" for i in range(10, N, 100)]
    engine.executemany(f"UPDATE {table} SET value = {ph} WHERE viewer_id = {ph}", [("new", v) for v in changed])
    engine.execute(f"UPDATE {table} SET value = {ph} WHERE viewer_id = {ph}", ("ABC", "v00001"))
    third, requests, _, _ = _run(engine, sim, creds, table)
    assert third.counts["sent"] == len(changed) + 1 and third.counts["unchanged"] == N - len(changed) - 1
    assert sim.values[(APP_ID, "v00001", "VIP_LEVEL")] == "ABC"


def test_diff_in_warehouse(engine: Engine, sim, creds) -> None:
    table = _load(engine)
    first, _, _, _ = _run(engine, sim, creds, table)
    assert first.counts["sent"] == N
    ph = engine.placeholder
    engine.execute(f"UPDATE {table} SET value = {ph} WHERE viewer_id = {ph}", ("ABC", "v00001"))
    # Nothing changed but a case: one row leaves the warehouse (a binary comparison on MariaDB).
    second, requests, _, _ = _run(engine, sim, creds, table, in_warehouse=True)
    assert second.items == 1 and second.counts["sent"] == 1 and requests == 1
    assert sim.values[(APP_ID, "v00001", "VIP_LEVEL")] == "ABC"
    # The join that finds unchanged rows also says the state knows this key: changed, not new.
    assert second.changes == {"new": 0, "changed": 1, "cleared": 0}

    # The diff in the warehouse: only the changed rows (again 1% and a case-only change) leave it.
    changed = [f"v{i:05d}" for i in range(20, N, 100)]
    engine.executemany(f"UPDATE {table} SET value = {ph} WHERE viewer_id = {ph}", [("newer", v) for v in changed])
    engine.execute(f"UPDATE {table} SET value = {ph} WHERE viewer_id = {ph}", ("AbC", "v00001"))
    fourth, requests, _, _ = _run(engine, sim, creds, table, in_warehouse=True)
    assert fourth.items == len(changed) + 1 and fourth.counts["sent"] == len(changed) + 1
    assert fourth.changes == {"new": 0, "changed": len(changed) + 1, "cleared": 0}
    assert sim.values[(APP_ID, "v00001", "VIP_LEVEL")] == "AbC"
    assert sim.values[(APP_ID, "v00020", "VIP_LEVEL")] == "newer"
    # And with nothing changed, nothing leaves the warehouse.
    fifth, requests, _, _ = _run(engine, sim, creds, table, in_warehouse=True)
    assert fifth.items == 0 and requests == 0


def test_wide_form_types(engine: Engine, sim, creds) -> None:
    table = engine.table("wide")
    # MySQL's DATETIME keeps no fraction unless asked for one (DATETIME(6): microseconds).
    datetime_type = "DATETIME(6)" if engine.name == "mariadb" else "TIMESTAMP"
    engine.execute(
        f"CREATE TABLE {table} (viewer_id VARCHAR(64), amount DECIMAL(10, 2), paid_at {datetime_type}, "
        f"lessons INTEGER, note VARCHAR(64))"
    )
    ph = engine.placeholder
    engine.executemany(
        f"INSERT INTO {table} VALUES ({ph}, {ph}, {ph}, {ph}, {ph})",
        [
            ("w1", decimal.Decimal("12.5"), dt.datetime(2025, 3, 4, 5, 6, 7), 3, "会员 🎉"),
            ("w2", decimal.Decimal("1"), dt.datetime(2025, 3, 4, 5, 6, 7, 250000), 0, None),
        ],
    )
    mapping = ColumnMapping.wide(
        "viewer_id",
        {"PAY_STATUS": "amount", "VIP_LEVEL": "paid_at", "COURSE_PROGRESS": "lessons", "MEMBER_TIER": "note"},
    )
    source = SqlSource(engine.connect, table=table, **engine.source_kwargs())
    report = SqlReportTable(engine.connect, engine.table("polyv_sync_report"), dialect=engine.dialect)
    result = sync(source, creds, SyncOptions(send=FAST, mapping=mapping), report, progress=Progress(interval_s=1e9))
    assert result.ok
    values = sim.values
    assert values[(APP_ID, "w1", "PAY_STATUS")] == "12.50"
    assert values[(APP_ID, "w2", "PAY_STATUS")] == "1.00"
    assert values[(APP_ID, "w1", "VIP_LEVEL")] == "2025-03-04T05:06:07"
    assert values[(APP_ID, "w2", "VIP_LEVEL")] == "2025-03-04T05:06:07.25"
    assert values[(APP_ID, "w1", "COURSE_PROGRESS")] == "3"
    assert values[(APP_ID, "w1", "MEMBER_TIER")] == "会员 🎉"


@pytest.mark.parametrize("batch_rows", [1, 7, 1000])
def test_source_batches_keep_every_row_once(engine: Engine, batch_rows: int) -> None:
    table = _load(engine, 50)
    source = SqlSource(engine.connect, table=table, **engine.source_kwargs())
    batches = list(source.batches(list(MAPPING.source_columns), batch_rows))
    assert all(b.num_rows <= batch_rows for b in batches)
    got = [v for b in batches for v in b.column("value").to_pylist()]
    assert sorted(got) == sorted(_value(i) for i in range(50))
