"""Partition runs of one account: the CLI flags, each item in exactly one partition's report,
duplicates caught within a partition, and the lock rules on the folder state."""

from __future__ import annotations

import collections
import json
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polyv_connector import runspec
from polyv_connector.cli import main
from polyv_connector.config import SyncOptions
from polyv_connector.errors import BusyError, ConfigError
from polyv_connector.partitioning import WHOLE, Slice, partition_of
from polyv_connector.report import ParquetReport
from polyv_connector.run import sync
from polyv_connector.sources.parquet import ParquetSource
from polyv_connector.state.folder import SyncState
from tests.conftest import APP_ID, APP_SECRET, FAST, FIELDS, write_items

N = 3


def _rows() -> list[tuple[str | None, str | None, str | None]]:
    rows: list[tuple[str | None, str | None, str | None]] = [
        (f"viewer-{i}", FIELDS[i % len(FIELDS)], f"v{i}") for i in range(120)
    ]
    rows += [
        ("viewer-7", FIELDS[7 % len(FIELDS)], "v7"),  # a duplicate of row 7
        ("viewer-8", FIELDS[8 % len(FIELDS)], "other"),  # conflicts with row 8
        (None, "PAY_STATUS", "x"),  # null viewerId: partition 0, rejected
        ("  ", "PAY_STATUS", "y"),  # blank viewerId: partition 0, rejected
    ]
    return rows


def _run(tmp_path, k: int, n: int, *extra: str) -> int:
    src = tmp_path / "in.parquet"
    if not src.exists():
        write_items(src, _rows())
    return main(
        [
            "run",
            "--input",
            str(src),
            "--report",
            str(tmp_path / f"r-{k}-of-{n}.parquet"),
            "--state-dir",
            str(tmp_path / "state"),
            "--partitions",
            str(n),
            "--partition",
            str(k),
            *extra,
        ]
    )


def test_cli_partitions_report_every_item_exactly_once(tmp_path, env, sim) -> None:
    codes = [_run(tmp_path, k, N, "--summary-json", str(tmp_path / f"s{k}.json")) for k in range(N)]
    assert codes == [0] * N  # rejected, duplicate and conflicting rows are reported, not failures
    summaries = [json.loads((tmp_path / f"s{k}.json").read_text()) for k in range(N)]
    assert [(s["partition"], s["partitions"]) for s in summaries] == [(k, N) for k in range(N)]
    assert not any(APP_SECRET in (tmp_path / f"s{k}.json").read_text() for k in range(N))
    reports = [pq.read_table(tmp_path / f"r-{k}-of-{N}.parquet").to_pylist() for k in range(N)]
    seen = collections.Counter(
        (r["viewerId"], r["customFieldId"], r["customFieldValue"]) for rows in reports for r in rows
    )
    assert seen == collections.Counter(_rows())
    for k, rows in enumerate(reports):
        assert rows and all(r["partition"] == k and r["partitions"] == N for r in rows)
        # rowNumber counts within the partition's own read.
        assert [r["rowNumber"] for r in rows] == list(range(len(rows)))
        assert all(partition_of(r["viewerId"], N) == k for r in rows)
    by_viewer = {(r["viewerId"], r["customFieldValue"]): r for rows in reports for r in rows}
    statuses = collections.Counter(r["status"] for rows in reports for r in rows)
    # The duplicate and the conflict are caught within their partition (same key, same partition).
    assert statuses["duplicate"] == 1
    assert by_viewer[("viewer-8", "other")]["status"] == "rejected"
    assert by_viewer[(None, "x")]["partition"] == 0 and by_viewer[("  ", "y")]["partition"] == 0
    sent = {(v, f) for (_, v, f) in sim.values}
    assert len(sent) == 119 == statuses["sent"]  # viewer-8's two values conflict: neither is sent
    # The state now holds every partition's items: a whole run finds them unchanged.
    assert main(["run", "--input", str(tmp_path / "in.parquet"), "--report", str(tmp_path / "w.parquet"),
                 "--state-dir", str(tmp_path / "state")]) == 0  # fmt: skip
    whole = pq.read_table(tmp_path / "w.parquet").to_pylist()
    assert collections.Counter(r["status"] for r in whole)["unchanged"] == 119
    assert all(r["partition"] is None and r["partitions"] is None for r in whole)


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (["--partitions", "0"], "--partitions"),
        (["--partitions", "1025"], "--partitions"),
        (["--partitions", "four"], "--partitions"),
        (["--partitions", "3", "--partition", "3"], "--partition"),
        (["--partitions", "3", "--partition", "-1"], "--partition"),
        (["--partition", "1"], "--partition"),
    ],
)
def test_bad_partition_values_exit_2_before_any_request(tmp_path, env, sim, capsys, args, setting) -> None:
    src = write_items(tmp_path / "in.parquet", [("a", "PAY_STATUS", "1")])
    code = main(["run", "--input", str(src), "--report", str(tmp_path / "r.parquet"), *args])
    err = capsys.readouterr().err
    assert code == 2 and f"configuration error: {setting}:" in err
    assert sim.stats.api_requests == 0


def test_operator_and_template_values_name_the_argument() -> None:
    spec = runspec.resolve({"partitions": "4", "partition": "2"}, front="operator", env={})
    assert spec.options.slice == Slice(2, 4)
    with pytest.raises(ConfigError) as info:
        runspec.resolve({"partitions": 4, "partition": 4}, front="operator", env={})
    assert info.value.setting == "partition"
    with pytest.raises(ConfigError) as info:
        runspec.resolve({"partitions": "x"}, front="operator", env={})
    assert info.value.setting == "partitions"


# ---- locks ---------------------------------------------------------------------------------------
def _state(tmp_path) -> SyncState:
    return SyncState(tmp_path / "state", APP_ID, implicit_lock=False)


def test_partitions_run_together_never_beside_a_whole_run(tmp_path) -> None:
    a, b, whole = _state(tmp_path), _state(tmp_path), _state(tmp_path)
    a.lock("run-a", mode="shared", part=Slice(0, 2))
    b.lock("run-b", mode="shared", part=Slice(1, 2))  # the other slice: at once
    with pytest.raises(BusyError) as info:
        whole.lock("run-whole")
    assert "run-a" in str(info.value) and "run-b" in str(info.value)
    a.unlock()
    b.unlock()
    whole.lock("run-whole")  # free again
    with pytest.raises(BusyError):
        a.lock("run-a2", mode="shared", part=Slice(0, 2))  # and a partition waits for a whole run
    whole.unlock()


def test_a_whole_run_waits_for_the_partitions_to_end(tmp_path) -> None:
    partition, whole = _state(tmp_path), _state(tmp_path)
    partition.lock("run-part", mode="shared", part=Slice(0, 2))
    timer = threading.Timer(0.3, partition.unlock)
    timer.start()
    started = time.monotonic()
    whole.lock("run-whole", timeout_s=10)  # lock_timeout: waits rather than fails
    assert time.monotonic() - started >= 0.25
    assert [h["runId"] for h in whole.holders()] == ["run-whole"]
    whole.unlock()
    timer.join()


def test_the_same_slice_is_held_by_one_run_only(tmp_path) -> None:
    a, again = _state(tmp_path), _state(tmp_path)
    a.lock("run-a", mode="shared", part=Slice(1, 3))
    with pytest.raises(BusyError) as info:
        again.lock("run-retry", mode="shared", part=Slice(1, 3))
    assert "run-a" in str(info.value)
    # Refused whole: the retry holds nothing (not even the account's shared lock).
    assert [h["runId"] for h in again.holders()] == ["run-a"]
    a.unlock()


def test_a_different_partition_count_is_refused_naming_both(tmp_path) -> None:
    two, four = _state(tmp_path), _state(tmp_path)
    two.lock("run-two", mode="shared", part=Slice(0, 2))
    with pytest.raises(BusyError) as info:
        four.lock("run-four", mode="shared", part=Slice(3, 4))
    message = str(info.value)
    assert "2 partitions" in message and "this run has 4 partitions" in message and "run-two" in message
    assert [h["runId"] for h in four.holders()] == ["run-two"]  # nothing of run-four is left held
    two.unlock()
    four.lock("run-four", mode="shared", part=Slice(3, 4))  # once the N=2 runs are gone
    four.unlock()


def test_a_whole_sync_beside_a_partition_run_gets_busy_and_sends_nothing(tmp_path, creds, sim) -> None:
    src = write_items(tmp_path / "in.parquet", [("a", "PAY_STATUS", "1")])
    holder = _state(tmp_path)
    holder.lock("partition-run", mode="shared", part=Slice(0, 2))
    options = SyncOptions(send=FAST, state_dir=str(tmp_path / "state"))
    with pytest.raises(BusyError):
        sync(ParquetSource(str(src)), creds, options, ParquetReport(tmp_path / "r.parquet"))
    assert sim.stats.api_requests == 0
    # A partition run of the same N goes ahead beside it.
    part = SyncOptions(send=FAST, state_dir=str(tmp_path / "state"), partitions=2, partition=1)
    result = sync(ParquetSource(str(src)), creds, part, ParquetReport(tmp_path / "r1.parquet"))
    assert result.items == (1 if partition_of("a", 2) == 1 else 0)
    holder.unlock()


def test_the_last_partition_to_finish_compacts_the_folder_state(tmp_path, creds, sim) -> None:
    src = write_items(tmp_path / "in.parquet", [(f"v{i}", "PAY_STATUS", str(i)) for i in range(40)])
    state_dir = tmp_path / "state"
    other = _state(tmp_path)
    other.lock("partition-0", mode="shared", part=Slice(0, 2))  # partition 0 still running
    opts = SyncOptions(send=FAST, state_dir=str(state_dir), partitions=2, partition=1)
    sync(ParquetSource(str(src)), creds, opts, None)
    folder = state_dir / APP_ID
    assert list(folder.glob("log-*.arrows"))  # not alone: its log waits
    other.unlock()
    opts0 = SyncOptions(send=FAST, state_dir=str(state_dir), partitions=2, partition=0)
    sync(ParquetSource(str(src)), creds, opts0, None)
    assert not list(folder.glob("log-*.arrows")) and (folder / "base.parquet").exists()  # last: compacted
    keys, _ = _state(tmp_path).load()
    assert len(keys) == 40


def test_the_slice_reaches_the_source_only_for_partition_runs(tmp_path) -> None:
    src = write_items(tmp_path / "in.parquet", [(f"v{i}", "PAY_STATUS", str(i)) for i in range(50)])
    cols = ["viewerId", "customFieldId", "customFieldValue"]
    source = ParquetSource(str(src))
    whole = pa.Table.from_batches(list(source.batches(cols, 7, WHOLE)))
    parts = [pa.Table.from_batches(list(source.batches(cols, 7, Slice(k, 3)))) for k in range(3)]
    assert sum(p.num_rows for p in parts) == whole.num_rows == 50
    assert sorted(v for p in parts for v in p.column("viewerId").to_pylist()) == sorted(
        whole.column("viewerId").to_pylist()
    )
    assert json.dumps(sorted(partition_of(v, 3) for v in parts[2].column("viewerId").to_pylist())).count("2") == (
        parts[2].num_rows
    )
