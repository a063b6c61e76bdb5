"""Change limits (issue 20), in-process: change kinds, the change limit, the shrink of a
whole-source run, ``removed``, the baseline in the state's metadata record, NULL as clear, and
partition runs (per slice). The real-process tests are in tests/engine/test_limits_cli.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from polyv_connector import SyncOptions, sync
from polyv_connector.engine.changes import CHANGED, CLEARED, NEW, Breach, Limits, check_limits, classify, count_kinds
from polyv_connector.fingerprints import UNCONFIRMED, key_hashes
from polyv_connector.partitioning import WHOLE, Slice, partition_of
from polyv_connector.report import ParquetReport
from polyv_connector.sources.parquet import ParquetSource
from polyv_connector.state.folder import SyncState
from tests.conftest import APP_ID, FAST, read_report, write_items


def run(tmp_path: Path, creds, rows, name: str, **kw):
    src = write_items(tmp_path / f"{name}.in.parquet", rows)
    opts = SyncOptions(send=FAST, state_dir=str(tmp_path / "state"), **kw)
    res = sync(ParquetSource(str(src)), creds, opts, ParquetReport(tmp_path / f"{name}.parquet"))
    return res, read_report(tmp_path / f"{name}.parquet")


def rows_of(n: int, tag: str = "x", start: int = 0) -> list[tuple[str | None, str | None, str | None]]:
    return [(f"v{i}", "PAY_STATUS", f"{tag}{i}") for i in range(start, start + n)]


def meta_of(tmp_path: Path) -> dict:
    return SyncState(tmp_path / "state", APP_ID).read_meta()


def state_files(tmp_path: Path) -> dict[str, bytes]:
    """The state's files, but the run sequence (every run that takes the lock counts)."""
    root = tmp_path / "state"
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "runseq" and not p.name.endswith(".lock")
    }


# ---- pure logic ------------------------------------------------------------------------------------


def test_classify_and_count_kinds() -> None:
    pending = np.array([True, True, True, False, True])
    known = np.array([False, True, True, True, False])
    empty = np.array([False, False, True, False, True])
    kind = classify(pending, known, empty)
    assert kind.tolist() == [NEW, CHANGED, CLEARED, 0, CLEARED]
    assert count_kinds(kind) == {"new": 1, "changed": 1, "cleared": 2}
    assert count_kinds(np.empty(0, np.uint8)) == {"new": 0, "changed": 0, "cleared": 0}


def test_check_limits_names_the_numbers_and_the_setting() -> None:
    limits = Limits(0.5, 1000, 0.5)
    assert check_limits(600, None, limits) == []  # no completed run yet: exempt
    assert check_limits(600, 999, limits) == []  # below change_limit_min_items
    assert check_limits(500, 1000, limits) == []  # at the limit is within it
    (breach,) = check_limits(501, 1000, limits)
    assert isinstance(breach, Breach) and breach.code == "change_limit" and breach.setting == "max_changed_fraction"
    assert "501 changes" in breach.message and "1,000 items" in breach.message and "50.0%" in breach.message
    assert check_limits(10**6, 1000, Limits(None, 1000, 0.5)) == []  # none: off
    assert check_limits(1500, 1000, Limits(2.0, 1000, 0.5)) == []  # the fraction may exceed 1
    (shrank,) = check_limits(0, None, limits, distinct_read=300, baseline=1000)
    assert shrank.code == "source_shrank" and shrank.setting == "max_source_shrink" and "300" in shrank.message
    assert check_limits(0, None, limits, distinct_read=500, baseline=1000) == []
    assert check_limits(0, None, Limits(0.5, 1000, None), distinct_read=1, baseline=1000) == []


# ---- the change limit ------------------------------------------------------------------------------


def test_kinds_are_counted_and_a_full_refresh_resend_is_no_change(tmp_path, sim, creds) -> None:
    first, _ = run(tmp_path, creds, rows_of(100), "1")
    assert first.changes == {"new": 100, "changed": 0, "cleared": 0}
    rows = rows_of(100)
    rows[0] = ("v0", "PAY_STATUS", "other")
    rows[1] = ("v1", "PAY_STATUS", "")
    rows.append(("w1", "PAY_STATUS", "1"))
    second, _ = run(tmp_path, creds, rows, "2")
    assert second.changes == {"new": 1, "changed": 1, "cleared": 1}
    assert second.counts["sent"] == 3 and second.to_dict()["changes"] == second.changes
    full, _ = run(tmp_path, creds, rows, "3", full_refresh=True)
    assert full.counts["sent"] == 101 and full.changes == {"new": 0, "changed": 0, "cleared": 0}


def test_a_breach_sends_nothing_moves_no_state_and_reports_every_item(tmp_path, sim, creds) -> None:
    run(tmp_path, creds, rows_of(2000), "1")
    before, saves = state_files(tmp_path), sim.stats.save_requests
    changed = rows_of(1100, "new") + rows_of(900, start=1100) + [(None, "PAY_STATUS", "x")]
    res, rep = run(tmp_path, creds, changed, "2")
    assert res.exit_code == 4 and not res.ok and sim.stats.save_requests == saves
    assert state_files(tmp_path) == before
    assert res.counts["not_attempted"] == 1100 and res.counts["unchanged"] == 900 and res.counts["rejected"] == 1
    assert res.counts_by_reason["change_limit"] == 1100
    (breach,) = res.breaches
    assert "1,100 changes" in breach.message and "2,000 items" in breach.message
    assert res.to_dict()["limitBreaches"] == [
        {"code": "change_limit", "setting": "max_changed_fraction", "message": breach.message}
    ]
    not_sent = [r for r in rep if r["status"] == "not_attempted"]
    assert {r["reasonCode"] for r in not_sent} == {"change_limit"}
    assert "max_changed_fraction" in not_sent[0]["reason"]
    # The same run with the limit raised sends them.
    ok, _ = run(tmp_path, creds, changed, "3", max_changed_fraction=1.0)
    assert ok.exit_code == 0 and ok.counts["sent"] == 1100


def test_small_accounts_and_the_limit_off_are_never_blocked(tmp_path, sim, creds) -> None:
    run(tmp_path, creds, rows_of(500), "1")
    res, _ = run(tmp_path, creds, rows_of(500, "new"), "2")  # 100% changed, below 1000 items
    assert res.exit_code == 0 and res.counts["sent"] == 500
    res, _ = run(tmp_path, creds, rows_of(500, "again"), "3", change_limit_min_items=100)
    assert res.exit_code == 4 and res.counts_by_reason == {"change_limit": 500}
    res, _ = run(tmp_path, creds, rows_of(500, "again"), "4", change_limit_min_items=100, max_changed_fraction=None)
    assert res.exit_code == 0 and res.counts["sent"] == 500


def test_the_baseline_is_written_only_by_a_completed_run(tmp_path, sim, creds) -> None:
    run(tmp_path, creds, rows_of(1500), "1")
    meta = meta_of(tmp_path)
    assert meta["knownItems"] == 1500 and meta["partitions"] == 1
    run(tmp_path, creds, rows_of(1000, "new"), "2")  # a breach: the record stays as it was
    assert meta_of(tmp_path) == meta
    run(tmp_path, creds, rows_of(10, "new", start=5000), "3")
    assert meta_of(tmp_path)["knownItems"] == 1510


def test_keys_held_unconfirmed_are_resent_not_counted_as_changes(tmp_path, sim, creds) -> None:
    # A run stopped while sending leaves its keys unconfirmed (pre-marked): the rerun finishes
    # its work. Before the fix they counted as changes, and the rerun of an account stopped
    # three quarters through a send was blocked by the limit (tests/hostile/test_chaos.py).
    rows = rows_of(2000)
    run(tmp_path, creds, rows, "1")
    store = SyncState(tmp_path / "state", APP_ID)
    keys, _ = key_hashes(pa.array([v for v, _, _ in rows[:1500]]), pa.array(["PAY_STATUS"] * 1500), store.hash_family)
    with store.open("stopped-while-sending", WHOLE, 5.0, False) as held:
        held.record(keys, np.full(1500, UNCONFIRMED))
    saves = sim.stats.save_requests
    res, _ = run(tmp_path, creds, rows, "2")
    assert res.exit_code == 0 and res.breaches == []
    assert res.counts["sent"] == 1500 and res.counts["unchanged"] == 500
    assert res.changes == {"new": 0, "changed": 0, "cleared": 0}
    assert sim.stats.save_requests > saves
    # A real change among them still counts.
    changed = rows_of(1200, "new") + rows[1200:]
    with store.open("stopped-again", WHOLE, 5.0, False) as held:
        held.record(keys, np.full(1500, UNCONFIRMED))
    res, _ = run(tmp_path, creds, changed, "3", max_changed_fraction=None)
    assert res.changes["changed"] == 0 and res.counts["sent"] == 1500  # unconfirmed: resent, whatever the value


def test_a_reset_state_knows_nothing_and_is_not_blocked(tmp_path, sim, creds) -> None:
    run(tmp_path, creds, rows_of(1500), "1")
    SyncState(tmp_path / "state", APP_ID).reset()
    res, _ = run(tmp_path, creds, rows_of(1500, "new"), "2")
    assert res.exit_code == 0 and res.changes["new"] == 1500


def test_a_dry_run_reports_the_breach_and_exits_4(tmp_path, sim, creds) -> None:
    run(tmp_path, creds, rows_of(2000), "1")
    res, rep = run(tmp_path, creds, rows_of(2000, "new"), "2", dry_run=True)
    assert res.exit_code == 4 and res.counts["not_attempted"] == 2000 and res.breaches


def test_a_baseline_made_with_other_partitions_is_not_compared(tmp_path, sim, creds, caplog) -> None:
    run(tmp_path, creds, rows_of(2000), "1")
    meta_path = tmp_path / "state" / APP_ID / f"meta-{WHOLE.name}.json"
    meta_path.write_text(json.dumps({"knownItems": 2000, "partitions": 4}))
    caplog.set_level("INFO", logger="polyv_connector")
    res, _ = run(tmp_path, creds, rows_of(2000, "new"), "2")
    assert res.exit_code == 0 and "made with 4 partition(s)" in caplog.text
    assert json.loads(meta_path.read_text())["partitions"] == 1


# ---- whole-source runs -----------------------------------------------------------------------------


def test_a_whole_source_run_that_shrank_sends_nothing(tmp_path, sim, creds) -> None:
    first, _ = run(tmp_path, creds, rows_of(1000), "1", whole_source=True)
    assert first.removed == 0
    meta = meta_of(tmp_path)
    assert meta["wholeSourceKeys"] == 1000
    saves = sim.stats.save_requests
    shrunk = [*rows_of(300), ("v-new", "PAY_STATUS", "1")]
    res, rep = run(tmp_path, creds, shrunk, "2", whole_source=True)
    assert res.exit_code == 4 and sim.stats.save_requests == saves
    assert [b.code for b in res.breaches] == ["source_shrank"]
    assert res.counts_by_reason == {"unchanged": 300, "source_shrank": 1}
    assert res.removed == 700  # the state's 1000 keys, 300 of them read
    # Not a whole-source run: no shrink check, no removed; the change is sent.
    delta, _ = run(tmp_path, creds, shrunk, "3")
    assert delta.exit_code == 0 and delta.removed is None and delta.counts["sent"] == 1
    allowed, _ = run(tmp_path, creds, rows_of(300), "4", whole_source=True, max_source_shrink=None)
    assert allowed.exit_code == 0 and allowed.removed == 701
    assert meta_of(tmp_path)["wholeSourceKeys"] == 300


# ---- NULL values -----------------------------------------------------------------------------------


def test_null_values_clear_sends_an_empty_value_reject_keeps_rejecting(tmp_path, sim, creds) -> None:
    rows = [("a", "PAY_STATUS", None), ("b", "PAY_STATUS", "1")]
    rejected, _ = run(tmp_path, creds, rows, "1")
    assert rejected.counts["rejected"] == 1 and rejected.counts_by_reason == {"null_value": 1}
    assert (APP_ID, "a", "PAY_STATUS") not in sim.values
    cleared, rep = run(tmp_path, creds, rows, "2", null_values="clear")
    assert cleared.counts["sent"] == 1 and cleared.changes == {"new": 0, "changed": 0, "cleared": 1}
    assert rep[0]["status"] == "sent" and rep[0]["customFieldValue"] == ""
    assert sim.values[(APP_ID, "a", "PAY_STATUS")] == ""
    again, _ = run(tmp_path, creds, rows, "3", null_values="clear")
    assert again.counts["unchanged"] == 2  # the state holds the empty value


# ---- partition runs: per slice ---------------------------------------------------------------------


def test_partition_runs_keep_a_baseline_per_slice(tmp_path, sim, creds) -> None:
    rows = rows_of(4000)
    for k in range(2):
        res, _ = run(tmp_path, creds, rows, f"p{k}", partitions=2, partition=k, whole_source=True)
        assert res.exit_code == 0
    slice0 = [r for r in rows if partition_of(str(r[0]), 2) == 0]
    meta0 = SyncState(tmp_path / "state", APP_ID).read_meta(Slice(0, 2))
    assert meta0["knownItems"] == len(slice0) == meta0["wholeSourceKeys"]
    # Slice 0's source changes every value: slice 0 stops, slice 1 (unchanged) runs.
    changed = [(v, f, "new" if partition_of(str(v), 2) == 0 else x) for v, f, x in rows]
    res0, _ = run(tmp_path, creds, changed, "q0", partitions=2, partition=0)
    res1, _ = run(tmp_path, creds, changed, "q1", partitions=2, partition=1)
    assert res0.exit_code == 4 and "slice 0 of 2" in res0.breaches[0].message
    assert res1.exit_code == 0 and res1.counts["unchanged"] == 4000 - len(slice0)
    # A whole-source slice that lost half its keys: removed per slice.
    half = slice0[: len(slice0) // 2]
    res, _ = run(tmp_path, creds, half, "r0", partitions=2, partition=0, whole_source=True, max_source_shrink=None)
    assert res.exit_code == 0 and res.removed == len(slice0) - len(half)


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf"])
def test_a_hostile_limit_is_a_config_error_naming_the_setting(value) -> None:
    from polyv_connector import runspec
    from polyv_connector.errors import ConfigError

    with pytest.raises(ConfigError, match="max_changed_fraction"):
        runspec.resolve({"max_changed_fraction": value}, front="operator", env={})
    with pytest.raises(ConfigError, match="max_source_shrink"):
        runspec.resolve({"max_source_shrink": value}, front="operator", env={})
    with pytest.raises(ConfigError, match="--change-limit-min-items"):
        runspec.resolve({"change_limit_min_items": value}, front="cli", env={})


def test_none_turns_a_limit_off_and_blank_keeps_the_default() -> None:
    from polyv_connector import runspec
    from polyv_connector.errors import ConfigError

    off = runspec.resolve({"max_changed_fraction": "none", "max_source_shrink": "None"}, front="operator", env={})
    assert off.options.max_changed_fraction is None and off.options.max_source_shrink is None
    blank = runspec.resolve({"max_changed_fraction": "", "max_source_shrink": None}, front="operator", env={})
    assert blank.options.max_changed_fraction == 0.5 and blank.options.max_source_shrink == 0.5
    above = runspec.resolve({"max_changed_fraction": "2.5", "null_values": "CLEAR"}, front="operator", env={})
    assert above.options.max_changed_fraction == 2.5 and above.options.null_values == "clear"
    extra = runspec.resolve({}, front="operator", env={}, extras={"max_changed_fraction": "0.1"})
    assert extra.options.max_changed_fraction == 0.1
    env = runspec.resolve({}, front="cli", env={"POLYV_MAX_CHANGED_FRACTION": "none", "POLYV_MAX_SOURCE_SHRINK": "0.2"})
    assert env.options.max_changed_fraction is None and env.options.max_source_shrink == 0.2
    with pytest.raises(ConfigError, match="connection 'c': extra 'max_source_shrink'"):
        runspec.resolve(
            {}, front="operator", env={}, extras={"max_source_shrink": "abc"}, extras_label="connection 'c'"
        )
