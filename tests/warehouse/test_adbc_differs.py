"""Why the connector has no ADBC read path (issue 13): on the same PostgreSQL rows, ADBC's
Arrow batches, even after :func:`arrow_column_to_source`, are not what the psycopg path gives.

If a future adbc-driver-postgresql makes these equal, this test fails: then the ADBC path can
be reconsidered (see docs/warehouses.md#no-adbc-read-path-yet).
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from polyv_connector.sources.sql import arrow_column_to_source, rows_to_batch
from tests.warehouse.support import PG_DSN

pytestmark = pytest.mark.postgres

NAMES = ["text", "int4", "int8", "num_scaled", "num_tiny", "ts", "tstz", "cjk_emoji"]
SQL = (
    "SELECT * FROM (VALUES ('a'::text, 1::int4, 9000000000::int8, 1.50::numeric(10,2), 1e-20::numeric, "
    "'2024-01-02 03:04:05.123456'::timestamp, '2024-01-02 03:04:05+08'::timestamptz, '张三😀'::text), "
    "(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)) t(" + ", ".join(NAMES) + ")"
)


def test_adbc_batches_differ_from_the_psycopg_path(pg_available: bool) -> None:
    adbc = pytest.importorskip("adbc_driver_postgresql.dbapi")
    import psycopg

    with psycopg.connect(PG_DSN) as conn:
        rows = conn.execute(SQL).fetchall()
    ours = rows_to_batch(rows, range(len(NAMES)), NAMES)
    with adbc.connect(PG_DSN) as conn:
        cur = conn.cursor()
        cur.execute(SQL)
        table = cur.fetch_arrow_table()
        cur.close()
    theirs = pa.RecordBatch.from_arrays([arrow_column_to_source(c.combine_chunks()) for c in table.columns], NAMES)

    same = {n for n in NAMES if ours.column(n).equals(theirs.column(n))}
    # Text (CJK, a 4-byte emoji, nulls), bigint, scaled numeric and naive timestamps agree ...
    assert same >= {"text", "int8", "num_scaled", "ts", "cjk_emoji"}
    # ... these do not: int4 is int32 in ADBC (int64 here), numeric text is PostgreSQL's own
    # ('0.00000000000000000001') where Decimal gives '1E-20', timestamptz is UTC whatever the
    # session's TimeZone (psycopg follows the session).
    assert theirs.column("int4").type == pa.int32() and ours.column("int4").type == pa.int64()
    assert theirs.column("num_tiny").to_pylist()[0] == "0.00000000000000000001"
    assert ours.column("num_tiny").to_pylist()[0] == "1E-20"
    assert "int4" not in same and "num_tiny" not in same
