"""The preflight's field list, asked for while the input is read (engine/fields.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from polyv_connector import Credentials, InputError, Secret, SyncOptions, exit_codes, sync
from polyv_connector.partitioning import WHOLE, Slice
from polyv_connector.report import ParquetReport
from polyv_connector.simulator import FaultConfig
from polyv_connector.sources.parquet import ParquetSource
from tests.conftest import APP_ID, FAST, read_report, write_items

FIELD_LIST_THREAD = "polyv-field-list"


def field_list_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == FIELD_LIST_THREAD]


class Watched(ParquetSource):
    """A Parquet source noting, as each chunk is read, whether the field list was in flight."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.list_in_flight: list[bool] = []

    def batches(self, columns: list[str], batch_rows: int, part: Slice = WHOLE) -> Iterator[pa.RecordBatch]:
        for batch in super().batches(columns, batch_rows, part):
            self.list_in_flight.append(any(t.is_alive() for t in field_list_threads()))
            yield batch


def test_the_first_chunk_is_read_while_the_field_list_is_asked_for(tmp_path, sim, creds) -> None:
    sim.set_faults(FaultConfig(latency_s=0.4))  # a far POLYV: the list's answer takes 0.4 s
    rows = [(f"v{i}", "PAY_STATUS" if i % 3 else "NO_SUCH_FIELD", str(i)) for i in range(30)]
    source = Watched(write_items(tmp_path / "in.parquet", rows))
    options = SyncOptions(send=FAST, read_batch_rows=10)
    res = sync(source, creds, options, ParquetReport(tmp_path / "r.parquet"))
    assert source.list_in_flight[0] is True  # the read did not wait for the list
    assert source.list_in_flight[1:] == [False, False]  # the first chunk's check did
    # And the check is the same: unknown fields rejected, the rest sent.
    assert res.counts["rejected"] == 10 and res.counts["sent"] == 20
    rejected = [r for r in read_report(tmp_path / "r.parquet") if r["status"] == "rejected"]
    assert {r["reasonCode"] for r in rejected} == {"unknown_field"}
    assert not field_list_threads()


def test_a_refused_field_list_stops_the_run_even_when_the_input_is_empty(tmp_path, sim) -> None:
    bad = Credentials(APP_ID, Secret("not-the-secret-0123456789abcdef"), sim.base_url)
    src = write_items(tmp_path / "in.parquet", [])
    res = sync(ParquetSource(str(src)), bad, SyncOptions(send=FAST), ParquetReport(tmp_path / "r.parquet"))
    assert res.exit_code != exit_codes.OK.code and res.aborted is not None
    assert sim.stats.save_requests == 0


def test_a_refused_field_list_sends_nothing_and_reports_every_item(tmp_path, sim) -> None:
    bad = Credentials(APP_ID, Secret("not-the-secret-0123456789abcdef"), sim.base_url)
    src = write_items(tmp_path / "in.parquet", [(f"v{i}", "PAY_STATUS", "x") for i in range(25)])
    res = sync(
        ParquetSource(str(src)), bad, SyncOptions(send=FAST, read_batch_rows=10), ParquetReport(tmp_path / "r.parquet")
    )
    assert res.aborted is not None and sim.stats.save_requests == 0
    assert [r["status"] for r in read_report(tmp_path / "r.parquet")] == ["not_attempted"] * 25


def test_no_field_list_request_outlives_a_plan_that_failed(tmp_path, sim, creds) -> None:
    sim.set_faults(FaultConfig(latency_s=0.3))
    src = tmp_path / "in.parquet"
    src.write_bytes(b"not parquet at all")
    with pytest.raises(InputError):
        sync(ParquetSource(str(src)), creds, SyncOptions(send=FAST), ParquetReport(tmp_path / "r.parquet"))
    assert not field_list_threads()


def test_an_unexpected_error_of_the_field_list_request_is_raised_by_the_run(tmp_path, sim, creds, monkeypatch) -> None:
    from polyv_connector.transport.client import PolyvClient

    def broken(self: PolyvClient, *args: object, **kwargs: object) -> list[dict[str, object]]:
        raise ZeroDivisionError("a bug in the request")

    monkeypatch.setattr(PolyvClient, "list_fields", broken)
    src = write_items(tmp_path / "in.parquet", [("v1", "PAY_STATUS", "x")])
    with pytest.raises(ZeroDivisionError, match="a bug in the request"):
        sync(ParquetSource(str(src)), creds, SyncOptions(send=FAST), ParquetReport(tmp_path / "r.parquet"))
    assert sim.stats.save_requests == 0


def test_an_interrupt_while_the_field_list_is_asked_for_does_not_wait_for_it(tmp_path, sim, creds) -> None:
    # Ctrl-C (or Airflow's task timeout) during the plan leaves at once, not once POLYV answers.
    sim.set_faults(FaultConfig(latency_s=30))

    class Interrupted(ParquetSource):
        def batches(self, columns: list[str], batch_rows: int, part: Slice = WHOLE) -> Iterator[pa.RecordBatch]:
            raise KeyboardInterrupt
            yield  # a generator, as the source's batches are

    src = write_items(tmp_path / "in.parquet", [("v1", "PAY_STATUS", "x")])
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        sync(Interrupted(str(src)), creds, SyncOptions(send=FAST), ParquetReport(tmp_path / "r.parquet"))
    assert time.monotonic() - started < 20  # the list's answer would take 30 s
