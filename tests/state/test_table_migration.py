"""A state table of versions 1 and 2 (texts, xxh3 hashes, one record per send) becomes the
compact layout when opened, rehashed in SQL, keeping the last confirmation of each key."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from polyv_connector import SyncOptions, sync
from polyv_connector.fingerprints import key_hashes, value_fingerprints
from polyv_connector.report import ParquetReport
from polyv_connector.sources.parquet import ParquetSource
from polyv_connector.sources.sql import SqlSource
from polyv_connector.state.table import SCHEMA, SqlStateTable
from polyv_connector.warehouse.schema import existing_columns, recorded_version
from tests.conftest import FAST, write_items
from tests.warehouse.support import PG_DSN, Warehouse, indexed_columns

LEGACY_COLUMNS = [
    ("appId", "TEXT NOT NULL"),
    ("key", "BIGINT NOT NULL"),
    ("fp", "BIGINT NOT NULL"),
    ("syncedAt", "DOUBLE PRECISION NOT NULL"),
    ("viewerId", "TEXT"),
    ("customFieldId", "TEXT"),
    ("valueMd5", "TEXT"),
    ("runId", "TEXT"),
    ("runSeq", "BIGINT"),
]


def _xxh3(viewer: str, field: str, value: str | None) -> tuple[int, int]:
    key = int(key_hashes(pa.array([viewer]), pa.array([field]), "xxh3")[0].view(np.int64)[0])
    fp = 0 if value is None else int(value_fingerprints(pa.array([value]), "xxh3").view(np.int64)[0])
    return key, fp


def make_legacy_table(
    wh: Warehouse, table: str, records: list[tuple[str, str, str, str | None, float, int | None]], version: int = 2
) -> None:
    """A state table as versions 1/2 wrote it: one row per record (appId, viewerId, field,
    value or None for "sent, unconfirmed", syncedAt, runSeq), its schema version recorded."""
    columns = LEGACY_COLUMNS if version == 2 else LEGACY_COLUMNS[:-1]
    wh.run(f"CREATE TABLE {table} ({', '.join(f'{wh.q(n)} {t}' for n, t in columns)})")
    rows = []
    for app, viewer, field, value, at, seq in records:
        key, fp = _xxh3(viewer, field, value)
        md5 = None if value is None else hashlib.md5(value.encode()).hexdigest()
        texts = (None, None, None) if value is None else (viewer, field, md5)
        row = (app, key, fp, at, *texts, f"run-{seq}")
        rows.append(row + ((seq,) if version == 2 else ()))
    if wh.name != "mariadb":  # there it failed on the TEXT column (error 1071), and the table stayed unindexed
        wh.run(f"CREATE INDEX legacy_key_idx ON {table} ({wh.q('appId')}, {wh.q('key')}, {wh.q('syncedAt')})")
    marks = ", ".join([wh.marker] * len(columns))
    wh.run(f"INSERT INTO {table} ({', '.join(wh.q(n) for n, _ in columns)}) VALUES ({marks})", rows)
    version_table = wh.table("polyv_schema_version")
    wh.run(f"CREATE TABLE {version_table} (table_name VARCHAR(255) PRIMARY KEY, version INTEGER, migrated_at TEXT)")
    wh.run(f"INSERT INTO {version_table} VALUES ('state', {version}, NULL)")


# Records of two accounts, oldest first within each key; the last confirmation of a key wins.
RECORDS = [
    ("app-a", "u1", "F", "abc", 1.0, 1),  # confirmed once
    ("app-a", "u2", "F", "old", 1.0, 1),
    ("app-a", "u2", "F", "new", 1.0, 2),  # a later run confirmed another value
    ("app-a", "u3", "F", "x", 5.0, 1),
    ("app-a", "u3", "F", None, 1.0, 2),  # then sent again and never confirmed: not vouched for
    ("app-a", "u4", "F", "a", 9.0, None),  # a version 1 record: older than any run's
    ("app-a", "u4", "F", "b", 1.0, 1),
    ("app-a", "u5", "G", "中文😀", 1.0, 3),
    ("app-a", "u6", "F", None, 10.0, 3),  # within one run: the marker, then the confirmation
    ("app-a", "u6", "F", "v6", 11.0, 3),
    ("app-b", "u1", "F", "zzz", 1.0, 1),
]
EXPECTED = {
    "app-a": [("u1", "F", "abc"), ("u2", "F", "new"), ("u4", "F", "b"), ("u5", "G", "中文😀"), ("u6", "F", "v6")],
    "app-b": [("u1", "F", "zzz")],
}


def _expected(app: str) -> list[tuple[int, int]]:
    rows = EXPECTED[app]
    keys, _ = key_hashes(pa.array([r[0] for r in rows]), pa.array([r[1] for r in rows]), "md5")
    fps = value_fingerprints(pa.array([r[2] for r in rows]), "md5")
    return sorted(zip(keys.tolist(), fps.tolist(), strict=True))


def _loaded(st: SqlStateTable) -> list[tuple[int, int]]:
    keys, fps = st.load()
    return list(zip(keys.tolist(), fps.tolist(), strict=True))


def _columns(wh: Warehouse, table: str) -> list[str] | None:
    conn = wh.connect()
    try:
        found = existing_columns(conn, table)
        return None if found is None else [c.casefold() for c in found]
    finally:
        conn.close()


def test_a_version_2_table_is_rewritten_compact_keeping_the_last_confirmations(warehouse: Warehouse) -> None:
    table = warehouse.table("state")
    make_legacy_table(warehouse, table, RECORDS)
    # A dry run reads the old layout as it is (same SQL) and changes nothing.
    dry = SqlStateTable(warehouse.connect, table, "app-a", create=False)
    assert _loaded(dry) == _expected("app-a")
    assert "appid" in (_columns(warehouse, table) or [])

    st = SqlStateTable(warehouse.connect, table, "app-a")
    assert _columns(warehouse, table) == ["acct", "key", "fp"]
    assert len(indexed_columns(warehouse, "state")) == (2 if warehouse.name == "mariadb" else 1)
    assert _loaded(st) == _expected("app-a")
    assert _loaded(SqlStateTable(warehouse.connect, table, "app-b")) == _expected("app-b")
    # The old table is kept under another name, whole; the new version is recorded.
    assert warehouse.run(f"SELECT COUNT(*) FROM {warehouse.table('state_v2')}") == [(len(RECORDS),)]
    conn = warehouse.connect()
    try:
        assert recorded_version(conn, st._target, table) == SCHEMA.current
    finally:
        conn.close()
    # Opening it again changes nothing.
    SqlStateTable(warehouse.connect, table, "app-a")
    assert _loaded(st) == _expected("app-a")
    assert _columns(warehouse, warehouse.table("state_v2_x")) is None


@pytest.mark.postgres
def test_a_version_1_table_without_run_numbers_is_rewritten_by_time(pg_schema: str) -> None:
    import psycopg

    wh = Warehouse("postgres", lambda: psycopg.connect(PG_DSN), f"{pg_schema}.", '"{}"')
    records = [
        ("app-a", "u1", "F", "first", 1.0, None),
        ("app-a", "u1", "F", "second", 2.0, None),
        ("app-a", "u2", "F", "kept", 1.0, None),
        ("app-a", "u2", "F", None, 3.0, None),
    ]
    make_legacy_table(wh, wh.table("state"), records, version=1)
    st = SqlStateTable(wh.connect, wh.table("state"), "app-a")
    key, _ = key_hashes(pa.array(["u1"]), pa.array(["F"]), "md5")
    assert _loaded(st) == [(int(key[0]), int(value_fingerprints(pa.array(["second"]), "md5")[0]))]


@pytest.mark.postgres
def test_tasks_opening_an_old_table_at_once_migrate_it_once(pg_schema: str) -> None:
    import psycopg

    wh = Warehouse("postgres", lambda: psycopg.connect(PG_DSN), f"{pg_schema}.", '"{}"')
    make_legacy_table(wh, wh.table("state"), RECORDS)
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def open_table() -> None:
        start.wait()
        try:
            SqlStateTable(wh.connect, wh.table("state"), "app-a")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_table) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    names = wh.run(f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{pg_schema}' ORDER BY 1")
    assert [n for (n,) in names] == ["polyv_schema_version", "state", "state_v2"]
    assert _loaded(SqlStateTable(wh.connect, wh.table("state"), "app-a")) == _expected("app-a")


@pytest.mark.postgres
def test_a_rerun_after_the_migration_sends_only_what_changed(pg_schema: str, tmp_path: Path, sim: Any, creds) -> None:
    import psycopg

    wh = Warehouse("postgres", lambda: psycopg.connect(PG_DSN), f"{pg_schema}.", '"{}"')
    items = [(f"viewer-{i}", "PAY_STATUS", f"paid {i} 已支付") for i in range(300)]
    make_legacy_table(wh, wh.table("state"), [(creds.app_id, v, f, val, 1.0, 1) for v, f, val in items])
    changed = [*items[:-1], (items[-1][0], items[-1][1], "PAID")]  # a case-and-text change
    src = write_items(tmp_path / "in.parquet", changed)
    state = SqlStateTable(wh.connect, wh.table("state"), creds.app_id)
    report = ParquetReport(tmp_path / "r.parquet")
    res = sync(ParquetSource(str(src)), creds, SyncOptions(send=FAST), report, state=state)
    assert res.counts["unchanged"] == 299
    assert res.counts["sent"] == 1
    assert sim.stats.save_requests == 1
    # The diff in the warehouse agrees, on the migrated table.
    wh.run(f"CREATE TABLE {wh.table('attrs')} (uid TEXT, field TEXT, val TEXT)")
    wh.run(f"INSERT INTO {wh.table('attrs')} VALUES (%s, %s, %s)", [*changed[:-1], (*changed[-1][:2], "paid")])
    st = SqlStateTable(wh.connect, wh.table("state"), creds.app_id, load_for_local_diff=False)
    source = SqlSource(wh.connect, table=wh.table("attrs"), skip_unchanged=st)
    assert source.count_unchanged(["uid", "field", "val"]) == 300 - 1  # paid != PAID
