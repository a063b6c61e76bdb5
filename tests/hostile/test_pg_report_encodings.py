"""End to end on PostgreSQL: NUL and invalid bytes reach a report table and a state table.

PostgreSQL text cannot hold NUL. Before, an item holding one was sent and confirmed, then the
report's COPY failed: no report, and every rerun sent nothing ("unchanged") and failed again.
"""

from __future__ import annotations

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polyv_connector import Credentials, SyncOptions, sync
from polyv_connector.fingerprints import key_hashes
from polyv_connector.report import MultiReport, ParquetReport
from polyv_connector.sources.parquet import ParquetSource
from polyv_connector.state.table import SqlStateTable
from polyv_connector.warehouse.report_table import SqlReportTable
from tests.conftest import APP_ID, FAST
from tests.hostile.test_encoding_corpus import raw_text
from tests.warehouse.support import PG_DSN, psycopg2_connect

VIEWERS = [b"v0", b"v\x001", b"v2", b"v3"]
VALUES = [b"a\x00b", b"nul in the id", b"\xc3(", b"\\x00 typed by hand"]


def connect() -> psycopg.Connection:
    return psycopg.connect(PG_DSN)


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_nul_and_invalid_bytes_reach_the_postgresql_report_and_state(
    tmp_path, sim, creds: Credentials, pg_schema: str, driver: str
) -> None:
    src = tmp_path / "in.parquet"
    pq.write_table(
        pa.table(
            {
                "viewerId": raw_text(VIEWERS),
                "customFieldId": pa.array(["PAY_STATUS"] * 4),
                "customFieldValue": raw_text(VALUES),
            }
        ),
        src,
    )
    factory = connect if driver == "psycopg" else psycopg2_connect
    table = f"{pg_schema}.polyv_report"

    def run(report_name: str) -> list[str]:
        state = SqlStateTable(factory, f"{pg_schema}.polyv_state", APP_ID)
        report = MultiReport([ParquetReport(tmp_path / report_name), SqlReportTable(factory, table)])
        res = sync(ParquetSource(str(src)), creds, SyncOptions(send=FAST), report, state=state)
        assert res.exit_code == 0, res.summary_line()
        return [r["status"] for r in pq.read_table(tmp_path / report_name).to_pylist()]

    assert run("r1.parquet") == ["sent", "sent", "rejected", "sent"]
    # POLYV holds the NULs as they were; the invalid row was never sent.
    assert sim.values == {
        (APP_ID, "v0", "PAY_STATUS"): "a\x00b",
        (APP_ID, "v\x001", "PAY_STATUS"): "nul in the id",
        (APP_ID, "v3", "PAY_STATUS"): "\\x00 typed by hand",
    }
    # The rerun writes its report too, and sends nothing new.
    assert run("r2.parquet") == ["unchanged", "unchanged", "rejected", "unchanged"]
    assert sim.stats.save_requests == 1

    with psycopg.connect(PG_DSN) as conn:
        rows = conn.execute(
            f'SELECT "viewerId", "customFieldValue", status, reason FROM {table} ORDER BY "runId", "rowNumber"'
        ).fetchall()
        state_keys = sorted(r[0] for r in conn.execute(f'SELECT "key" FROM {pg_schema}.polyv_state').fetchall())
    assert len(rows) == 8
    first = rows[:4]
    # NUL is stored as the four characters \x00; invalid bytes as backslashreplace shows them.
    assert [(v, value) for v, value, _, _ in first] == [
        ("v0", "a\\x00b"),
        ("v\\x001", "nul in the id"),
        ("v2", "\\xc3("),
        ("v3", "\\x00 typed by hand"),  # indistinguishable here: the Parquet report has the truth
    ]
    assert "customFieldValue is not valid UTF-8 text (byte \\xc3 at byte 0)" in first[2][3]
    # The state holds hashes of the ids as sent, NUL included (no text: nothing to escape).
    sent = pa.array(["v0", "v\x001", "v3"])
    keys = key_hashes(sent, pa.array(["PAY_STATUS"] * 3), "md5")[0].view(np.int64)
    assert state_keys == sorted(keys.tolist())
