"""What a task's source and data interval were, said where a first load that reads nothing shows.

A nightly DAG's default query reads the rows whose ``updated_at`` falls in the run's data
interval, which its date puts a day or two back: a first load of fresh rows reads 0 rows and
would look like a success with nothing to do. So a task logs, when it starts, the rendered query
(or the table, or the input) and the data interval; and a run that read 0 rows gets the interval
added to its warning (summary, run page, log).

SQL text only, never a connection's URI or password. Cheap to import.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from polyv_connector.bounds import QUERY_CHARS, cut

if TYPE_CHECKING:
    from polyv_connector.engine.result import SyncResult
    from polyv_connector.runspec import RunSpec


def start_lines(spec: RunSpec, context: Any) -> list[str]:
    """The INFO lines a task logs before reading: its source and the DAG run's data interval."""
    if spec.input_path:
        lines = [f"source: input_path {spec.input_path}"]
    elif spec.source_sql:
        # One line: the query's own line breaks would split it in the log.
        query = " ".join(spec.source_sql.split())
        lines = [f"source: source_sql (rendered): {cut(query, QUERY_CHARS)}"]
    else:
        lines = [f"source: source_table {spec.source_table}"]
    interval = data_interval(context)
    if interval is not None:
        start, end, dated = interval
        lines.append(f"data interval: [{start}, {end}) (run dated {dated})")
    return lines


def data_interval(context: Any) -> tuple[str, str, str] | None:
    """The DAG run's data interval start, end and logical date as text, or None (a manual run
    of a DAG without a schedule has none)."""
    get = getattr(context, "get", None)
    if get is None:
        return None
    start, end = get("data_interval_start"), get("data_interval_end")
    if start is None or end is None:
        return None
    dated = get("logical_date") or start
    return _iso(start), _iso(end), _iso(dated)


def note_zero_rows(result: SyncResult, context: Any, log: logging.Logger | Any) -> None:
    """Add the data interval to a 0-row warning of ``result`` (and log it once)."""
    from polyv_connector.engine.result import ZERO_ROWS

    interval = data_interval(context)
    if interval is None:
        return
    start, end, dated = interval
    note = (
        f"on the default interval query a run dated {dated} reads updated_at in [{start}, {end}); "
        "rows outside it are read by a source_sql without the interval or the backfill DAG"
    )
    for i, warning in enumerate(result.warnings):
        if warning.startswith(ZERO_ROWS):
            result.warnings[i] = f"{warning}; {note}"
            log.warning("%s", note)


def _iso(value: Any) -> str:
    isoformat = getattr(value, "isoformat", None)
    return str(isoformat()) if callable(isoformat) else str(value)
