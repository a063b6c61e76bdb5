"""``polyv-sync history`` over a folder of Parquet reports and a DuckDB report table; the URL
helpers it uses."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polyv_connector.cli import main
from polyv_connector.errors import ConfigError
from polyv_connector.history import format_history, history_from_reports, run_started
from polyv_connector.warehouse.db_url import connect_url, redact_url, resolve_db_url
from tests.warehouse.support import report_batch

HOSTILE = ["v'1", "v%", "v_", "a\x00b", "x\nrun\tforged"]


def _report(path, run_id: str, viewers: list[str], values: list[str], statuses: list[str] | None = None) -> None:
    batch = report_batch(run_id, len(viewers))
    cols = {"viewerId": viewers, "customFieldValue": values, "status": statuses or ["sent"] * len(viewers)}
    for name, data in cols.items():
        i = batch.schema.get_field_index(name)
        batch = batch.set_column(i, batch.schema.field(i), pa.array(data, pa.string()))
    i = batch.schema.get_field_index("syncedAt")
    synced = [t if s == "sent" else None for t, s in zip(batch.column(i).to_pylist(), cols["status"], strict=True)]
    batch = batch.set_column(i, batch.schema.field(i), pa.array(synced, batch.schema.field(i).type))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_batches([batch]), path)


@pytest.fixture
def reports(tmp_path):
    folder = tmp_path / "polyv_reports"
    _report(folder / "dag" / "r1.parquet", "20261201T020000Z-aaaa", ["v-1", "v-2", *HOSTILE], ["1", "2", *"abcde"])
    _report(folder / "dag" / "r2.parquet", "20261202T020000Z-bbbb", ["v-2", "v-1"], ["3", "4"], ["unchanged", "sent"])
    pq.write_table(pa.table({"something": [1, 2]}), folder / "dag" / "not_a_report.parquet")
    (folder / "dag" / "broken.parquet").write_bytes(b"PAR1 not really")
    (folder / "dag" / "r1.html").write_text("<html>")
    return folder


def test_history_from_a_folder_of_reports(reports, caplog):
    caplog.set_level(logging.INFO, "polyv_connector")
    entries = history_from_reports(reports, "v-2")
    assert [(e.run_id[:8], e.status, e.value) for e in entries] == [
        ("20261201", "sent", "2"),
        ("20261202", "unchanged", "3"),
    ]
    assert (
        "not_a_report.parquet: not a polyv-sync report (no viewerId, customFieldId, status, runId column)"
        in caplog.text
    )
    assert "broken.parquet: not a readable Parquet file" in caplog.text
    # The unchanged row was not sent: its time is the run's start, carried by the runId.
    assert entries[1].time == run_started("20261202T020000Z-bbbb")
    assert history_from_reports(reports, "v-2", "PAY_STATUS") == entries
    assert history_from_reports(reports, "v-2", "OTHER") == []


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_hostile_ids_match_themselves_only_in_parquet(reports, index):
    entries = history_from_reports(reports, HOSTILE[index])
    assert [e.value for e in entries] == ["abcde"[index]]
    assert history_from_reports(reports, "v") == []


def test_the_listing_keeps_one_line_a_row():
    from polyv_connector.history import HistoryEntry

    entry = HistoryEntry("r\n1", None, "F\t", "sent", None, None, "evil\x1b[2Jvalue\nnext")
    lines = format_history([entry])
    assert len(lines) == 2 and "\x1b" not in lines[1] and "\n" not in lines[1]
    assert lines[1].split("\t") == ["r\\x0a1", "", "F\\x09", "sent", "", "evil\\x1b[2Jvalue\\x0anext"]


def test_the_cli_reads_reports(reports, capsys):
    assert main(["history", "--viewer-id", "v-1", "--reports", str(reports)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "run\ttime\tfield\tstatus\treason\tvalue"
    assert [line.split("\t")[3] for line in out[1:]] == ["sent", "sent"]
    assert out[1].split("\t")[4] == "polyv_rejected (HTTP 500)"
    assert main(["history", "--viewer-id", "v-1", "--field", "PAY_STATUS", "--reports", str(reports), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["run_id"][:8], r["value"]) for r in rows] == [("20261201", "1"), ("20261202", "4")]


def test_the_cli_reads_a_duckdb_report_table(tmp_path, capsys, monkeypatch):
    import duckdb

    from polyv_connector.warehouse.report_table import SqlReportTable

    path = tmp_path / "wh.duckdb"
    sink = SqlReportTable(lambda: duckdb.connect(str(path)), "polyv_sync_report", dialect="duckdb")
    sink.write(report_batch("20261201T020000Z-aaaa", 3))
    sink.close()
    monkeypatch.delenv("POLYV_DB_URL", raising=False)
    args = ["history", "--viewer-id", "v1", "--report-table", "polyv_sync_report", "--db-url", f"duckdb://{path}"]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].startswith("20261201T020000Z-aaaa\t2025-05-06T07:08:09+00:00\tPAY_STATUS\tsent")
    # The URL may come from POLYV_DB_URL alone.
    monkeypatch.setenv("POLYV_DB_URL", f"duckdb://{path}")
    assert main(args[:5]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_the_cli_needs_one_source(tmp_path, capsys):
    assert main(["history", "--viewer-id", "v"]) == 2
    assert "--reports" in capsys.readouterr().err
    table = ["--report-table", "t; DROP TABLE x", "--db-url", f"duckdb://{tmp_path}/x.duckdb"]
    assert main(["history", "--viewer-id", "v", *table]) == 2


def test_db_url_password_from_the_environment_and_never_shown():
    env = {"POLYV_DB_URL": "postgresql://polyv:s3cret@db:5432/wh"}
    assert resolve_db_url("postgresql://polyv@db:5432/wh", env=env) == "postgresql://polyv:s3cret@db:5432/wh"
    assert resolve_db_url(None, env=env) == env["POLYV_DB_URL"]
    assert resolve_db_url("postgresql://u:own@db/wh", env=env) == "postgresql://u:own@db/wh"
    with pytest.raises(ConfigError, match="POLYV_DB_URL"):
        resolve_db_url(None, env={})
    assert redact_url("mysql://u:s3cret@h:3306/d") == "mysql://u:***@h:3306/d"
    with pytest.raises(ConfigError) as err:
        connect_url("oracle://u:s3cret@h/d")
    assert "s3cret" not in str(err.value)
