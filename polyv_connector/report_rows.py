"""``report_rows``: which rows of a run's report are written (``all`` or ``changes``).

``all`` (the default) keeps a row per input item. ``changes`` keeps every row whose status is not
``unchanged``: each item sent, failed, rejected, duplicate, not attempted, in doubt or (in a dry
run) that would be sent keeps its row; the unchanged ones are only counted, and the counts go to
the runs table (:mod:`polyv_connector.warehouse.runs_table`), so a quiet night of a large account
writes a handful of report rows instead of one per item.

Pure: a record batch in, a record batch and the counts of what was dropped out.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Final, Literal

from polyv_connector.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

ReportRows = Literal["all", "changes"]
REPORT_ROWS: Final[tuple[ReportRows, ...]] = ("all", "changes")
DEFAULT_REPORT_ROWS: Final[ReportRows] = "all"
#: The only status ``changes`` leaves out of the report.
DROPPED_BY_CHANGES: Final = "unchanged"


def check_report_rows(value: str | None, setting: str = "report_rows") -> ReportRows:
    """``value`` as a :data:`ReportRows` (``None`` or blank: the default), else a ``ConfigError``."""
    text = (value or DEFAULT_REPORT_ROWS).strip().lower()
    for choice in REPORT_ROWS:
        if text == choice:
            return choice
    raise ConfigError(setting, f"must be one of {', '.join(REPORT_ROWS)}; got {value!r}")


def filter_report_rows(batch: pa.RecordBatch, report_rows: ReportRows) -> tuple[pa.RecordBatch, dict[str, int]]:
    """The rows of ``batch`` (report schema) that ``report_rows`` keeps, and the rows dropped by
    status (``{}`` when none were dropped).

    Add the dropped counts of every batch of a run (:func:`add_counts`) to know what the report
    leaves out; the run's counts by status (in the summary and the runs table) still count
    every item.
    """
    # pyarrow only where a report is written: the settings (and DAG files) import this module.
    import pyarrow.compute as pc

    if report_rows == "all" or batch.num_rows == 0:
        return batch, {}
    if report_rows != "changes":
        raise ValueError(f"unknown report_rows {report_rows!r}")
    dropped = pc.equal(batch.column("status"), DROPPED_BY_CHANGES)
    # status is NOT NULL in the report; a null would be kept (fill_null False), never dropped unseen.
    dropped = pc.fill_null(dropped, False)
    n_dropped = pc.sum(dropped).as_py() or 0
    if n_dropped == 0:
        return batch, {}
    return batch.filter(pc.invert(dropped)), {DROPPED_BY_CHANGES: int(n_dropped)}


def add_counts(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """``total`` and ``more`` added status by status (a new dict)."""
    return dict(Counter(total) + Counter(more))
