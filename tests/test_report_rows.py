"""``report_rows``: ``changes`` drops exactly the unchanged rows and counts them."""

from __future__ import annotations

import pyarrow as pa
import pytest

from polyv_connector.errors import ConfigError
from polyv_connector.model import STATUSES, report_schema
from polyv_connector.report_rows import add_counts, check_report_rows, filter_report_rows
from tests.warehouse.support import report_batch


def _with_statuses(statuses: list[str]) -> pa.RecordBatch:
    batch = report_batch("run-1", len(statuses))
    i = batch.schema.get_field_index("status")
    return batch.set_column(i, batch.schema.field(i), pa.array(statuses, pa.string()))


def test_changes_keeps_every_status_but_unchanged_dry_run_included():
    statuses = [*STATUSES, "unchanged", "unchanged"]
    kept, dropped = filter_report_rows(_with_statuses(statuses), "changes")
    assert kept.schema == report_schema()
    assert kept.column("status").to_pylist() == [s for s in statuses if s != "unchanged"]
    assert "dry_run" in kept.column("status").to_pylist()
    assert dropped == {"unchanged": 3}
    # Row numbers of the kept rows are the original ones (never renumbered).
    assert kept.column("rowNumber").to_pylist() == [i for i, s in enumerate(statuses) if s != "unchanged"]


def test_all_keeps_everything_and_counts_nothing():
    batch = _with_statuses(["unchanged", "sent"])
    kept, dropped = filter_report_rows(batch, "all")
    assert kept is batch and dropped == {}


def test_changes_on_a_batch_without_unchanged_rows_is_the_same_batch():
    batch = _with_statuses(["sent", "failed"])
    kept, dropped = filter_report_rows(batch, "changes")
    assert kept is batch and dropped == {}


def test_changes_on_a_quiet_batch_leaves_no_rows():
    kept, dropped = filter_report_rows(_with_statuses(["unchanged"] * 4), "changes")
    assert kept.num_rows == 0 and dropped == {"unchanged": 4}


def test_counts_add_up_over_batches():
    total: dict[str, int] = {}
    for statuses in (["unchanged", "sent"], ["unchanged"] * 3):
        total = add_counts(total, filter_report_rows(_with_statuses(statuses), "changes")[1])
    assert total == {"unchanged": 4}


@pytest.mark.parametrize(("value", "expected"), [(None, "all"), ("", "all"), (" Changes ", "changes"), ("all", "all")])
def test_check_report_rows(value, expected):
    assert check_report_rows(value) == expected


@pytest.mark.parametrize("value", ["some", "changes;drop", "unchanged"])
def test_check_report_rows_refuses_other_values(value):
    with pytest.raises(ConfigError, match="report_rows"):
        check_report_rows(value)
