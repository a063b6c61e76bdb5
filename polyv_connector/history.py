"""One viewer's history: what each run did to a viewer, from the report table or Parquet reports.

``polyv-sync history --viewer-id ID [--field FIELD]`` lists, run by run, each report row of
that viewer: the run, its time (``syncedAt`` when the value was sent, else the start the
``runId`` carries), the field, the status, the reason code and text, and the value as sent.
The viewer id and the field are always bound parameters or Arrow filter values, never SQL
text: quotes, ``%``, ``_`` and NUL match themselves only. A report written with
``report_rows=changes`` has no rows for the runs that left the viewer unchanged.

The same queries in SQL, per engine, are in docs/history.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from polyv_connector.errors import ConfigError

log = logging.getLogger("polyv_connector")

#: Columns a Parquet file must have to be read as a report.
REQUIRED = ("viewerId", "customFieldId", "status", "runId")
#: The report columns history shows (those a version-1 report lacks are read as null).
READ = (
    "runId",
    "airflowRunId",
    "appId",
    "rowNumber",
    "syncedAt",
    "customFieldId",
    "status",
    "reasonCode",
    "reason",
    "customFieldValue",
)
_STAMP = re.compile(r"^(\d{8}T\d{6}Z)-")


@dataclass(frozen=True)
class HistoryEntry:
    """One report row of the viewer: what one run did to one of its fields."""

    run_id: str
    time: dt.datetime | None
    field: str | None
    status: str
    reason_code: str | None
    reason: str | None
    value: str | None
    app_id: str | None = None
    airflow_run_id: str | None = None
    row_number: int | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["time"] = self.time.isoformat() if self.time else None
        return out


def run_started(run_id: str) -> dt.datetime | None:
    """The start a ``runId`` carries (``20261207T085443Z-1a2b3c4d``), or ``None``."""
    match = _STAMP.match(run_id or "")
    if not match:
        return None
    return dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)


def _entry(row: dict[str, Any], source: str) -> HistoryEntry:
    synced = row.get("syncedAt")
    if isinstance(synced, dt.datetime) and synced.tzinfo is None:
        synced = synced.replace(tzinfo=dt.UTC)
    number = row.get("rowNumber")
    return HistoryEntry(
        run_id=str(row["runId"]),
        time=synced or run_started(str(row["runId"])),
        field=row.get("customFieldId"),
        status=str(row["status"]),
        reason_code=row.get("reasonCode"),
        reason=row.get("reason"),
        value=row.get("customFieldValue"),
        app_id=row.get("appId"),
        airflow_run_id=row.get("airflowRunId"),
        row_number=int(number) if number is not None else None,
        source=source,
    )


def _order(entries: list[HistoryEntry]) -> list[HistoryEntry]:
    # A runId starts with its UTC start: runs in the order they ran, rows in input order.
    return sorted(entries, key=lambda e: (e.run_id, e.row_number if e.row_number is not None else -1))


# ---- Parquet reports -------------------------------------------------------------------------------
def _parquet_files(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(".parquet"):
                yield Path(dirpath) / name


def history_from_reports(
    folder: str | os.PathLike[str], viewer_id: str, field: str | None = None
) -> list[HistoryEntry]:
    """The viewer's rows in every Parquet report under ``folder`` (subfolders included, symlinked
    folders not entered). A Parquet file that is not a report (lacking :data:`REQUIRED`) or
    cannot be read is skipped with a log line."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root = Path(folder)
    if not root.is_dir():
        raise ConfigError("--reports", f"{root} is not a folder")
    entries: list[HistoryEntry] = []
    for path in _parquet_files(root):
        try:
            names = set(pq.read_schema(path).names)
        except Exception as exc:
            log.warning("skipping %s: not a readable Parquet file (%s)", path, type(exc).__name__)
            continue
        lacking = [c for c in REQUIRED if c not in names]
        if lacking:
            log.info("skipping %s: not a polyv-sync report (no %s column)", path, ", ".join(lacking))
            continue
        # Arrow compares the values themselves: nothing in the id is syntax.
        condition = pc.field("viewerId") == viewer_id
        if field is not None:
            condition = condition & (pc.field("customFieldId") == field)
        try:
            table = pq.read_table(path, columns=[c for c in READ if c in names], filters=condition)
        except Exception as exc:
            log.warning("skipping %s: cannot read it as a report (%s: %s)", path, type(exc).__name__, exc)
            continue
        entries.extend(_entry(row, str(path)) for row in table.to_pylist())
    return _order(entries)


# ---- the report table ------------------------------------------------------------------------------
def history_sql(table: str, engine: str, identifier_format: str, placeholder: str, *, with_field: bool) -> str:
    """The query of one viewer's rows in ``table`` (a checked name); its parameters are
    :func:`history_params`. On MySQL/MariaDB, whose default collations compare
    case-insensitively, each value is compared twice: as text (the index finds the candidates)
    and as bytes (only the exact id is kept)."""
    from polyv_connector.warehouse.dialect import dialect_named
    from polyv_connector.warehouse.identifiers import quote_identifier

    def q(name: str) -> str:
        return quote_identifier(name, identifier_format)

    def same(column: str) -> str:
        text = f"{q(column)} = {placeholder}"
        if engine == "mysql":
            text += " AND " + dialect_named(engine).binary_equal(q(column), placeholder)
        return text

    where = same("viewerId") + (" AND " + same("customFieldId") if with_field else "")
    return f"SELECT {', '.join(q(c) for c in READ)} FROM {table} WHERE {where} ORDER BY {q('runId')}, {q('rowNumber')}"


def history_params(engine: str, viewer_id: str, field: str | None) -> tuple[str, ...]:
    """The parameters of :func:`history_sql`, in its order. PostgreSQL text cannot hold NUL: the
    report stores it escaped (``\\x00``), and so the values are escaped the same way."""
    from polyv_connector.warehouse.dbapi import NUL_ESCAPE

    values = [viewer_id] + ([field] if field is not None else [])
    if engine == "postgresql":
        values = [v.replace("\x00", NUL_ESCAPE) for v in values]
    twice = 2 if engine == "mysql" else 1
    return tuple(v for v in values for _ in range(twice))


def history_from_table(
    connection: Any,
    table: str,
    viewer_id: str,
    field: str | None = None,
    *,
    dialect: str | None = None,
    placeholder: str | None = None,
    identifier_format: str | None = None,
    setting: str = "--report-table",
) -> list[HistoryEntry]:
    """The viewer's rows in the report table ``table`` (a ``DbApiHook`` or connection factory),
    the viewer id and field matched exactly (:func:`history_sql`)."""
    from polyv_connector.warehouse import dbapi
    from polyv_connector.warehouse.dialect import dialect_of_connection
    from polyv_connector.warehouse.identifiers import check_table_name

    table = check_table_name(table, setting)
    target = dbapi.resolve(connection, placeholder=placeholder, identifier_format=identifier_format, dialect=dialect)
    conn = target.open(ConfigError, setting, "report")
    try:
        engine = dialect_of_connection(conn).name
        sql = history_sql(table, engine, target.identifier_format, target.placeholder, with_field=field is not None)
        with dbapi.cursor(conn) as cur:
            cur.execute(sql, history_params(engine, viewer_id, field))
            rows = cur.fetchall()
    except ConfigError:
        raise
    except Exception as exc:
        from polyv_connector.warehouse.db_errors import database_error

        raise database_error(exc, setting, f"cannot read the report table {table}") from exc
    finally:
        dbapi.close_quietly(conn)
    return _order([_entry(dict(zip(READ, row, strict=True)), table) for row in rows])


# ---- what a person reads ---------------------------------------------------------------------------
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}


def printable(text: str | None) -> str:
    """``text`` with control characters escaped (a value or id may hold a newline, a tab or a
    terminal escape sequence: the listing stays one line a row and cannot drive the terminal)."""
    return "" if text is None else text.translate(_CONTROL)


def format_history(entries: list[HistoryEntry]) -> list[str]:
    """The listing: a header and one tab-separated line a row."""
    lines = ["run\ttime\tfield\tstatus\treason\tvalue"]
    for e in entries:
        reason = e.reason_code or ""
        if e.reason:
            reason = f"{reason} ({e.reason})" if reason else e.reason
        when = e.time.isoformat(timespec="seconds") if e.time else ""
        cells = [e.run_id, when, e.field, e.status, reason, e.value]
        lines.append("\t".join(printable(c) for c in cells))
    return lines


# ---- the command -----------------------------------------------------------------------------------
def run_history_command(args: Any) -> int:
    """``polyv-sync history``: print the viewer's history (``--json``: one JSON object a line)."""
    import json

    from polyv_connector import exit_codes

    viewer_id, field = args.viewer_id, args.field
    if bool(args.reports) == bool(args.report_table):
        raise ConfigError("--reports", "give --reports DIR (Parquet reports) or --report-table T (with --db-url)")
    if args.reports:
        entries = history_from_reports(args.reports, viewer_id, field)
    else:
        from polyv_connector.warehouse.db_url import connect_url, resolve_db_url

        connect, dialect = connect_url(resolve_db_url(args.db_url))
        entries = history_from_table(connect, args.report_table, viewer_id, field, dialect=dialect)
    if args.json:
        for entry in entries:
            print(json.dumps(entry.to_dict(), ensure_ascii=False))
    else:
        for line in format_history(entries):
            print(line)
    if not entries:
        import sys

        print(f"polyv-sync: no report row for viewer {printable(viewer_id)!r}", file=sys.stderr)
    return exit_codes.OK.code
