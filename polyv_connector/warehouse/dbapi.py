"""DB-API plumbing shared by the SQL source, the report table and the state table.

Each takes either an Airflow common-sql ``DbApiHook`` (anything with ``get_conn()``) or a
zero-argument callable returning a DB-API connection; :func:`resolve` turns both into a
:class:`Target`. PostgreSQL's ``COPY`` is the one database-specific fast path.

Cleanup never masks the error that made it necessary, and is never silent either: a cursor
that will not close (:func:`cursor`, :func:`closing`), a rollback or a close that fails
(:func:`transaction`, :func:`rollback_quietly`, :func:`close_quietly`) is logged and the
original outcome stands.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from polyv_connector.errors import ConfigError
from polyv_connector.warehouse.dialect import PG_DRIVERS, driver_of

log = logging.getLogger("polyv_connector")

__all__ = ["PG_DRIVERS", "Target", "driver_of", "resolve"]


@dataclass(frozen=True)
class Target:
    """How to reach a database and write SQL for it."""

    connect: Callable[[], Any]
    placeholder: str = "%s"
    identifier_format: str = '"{}"'
    dialect: str = "default"

    def open(self, error: type[ConfigError], setting: str, what: str) -> Any:
        """A new connection, or ``error(setting, ...)`` saying which database could not be reached."""
        try:
            return self.connect()
        except Exception as exc:
            raise error(setting, f"cannot connect to the {what} database: {type(exc).__name__}: {exc}") from exc


def _hook_attr(hook: Any, name: str) -> Any:
    # Some hooks compute these from the connection and may fail for exotic setups.
    try:
        return getattr(hook, name, None)
    except Exception:
        return None


def resolve(
    connection: Any, *, placeholder: str | None = None, identifier_format: str | None = None, dialect: str | None = None
) -> Target:
    """A :class:`Target` for a ``DbApiHook`` or a connection factory; explicit values win."""
    if hasattr(connection, "get_conn"):
        return Target(
            connection.get_conn,
            placeholder or _hook_attr(connection, "placeholder") or "%s",
            identifier_format or _hook_attr(connection, "escape_word_format") or '"{}"',
            (dialect or _hook_attr(connection, "dialect_name") or "default").lower(),
        )
    if callable(connection):
        return Target(connection, placeholder or "%s", identifier_format or '"{}"', (dialect or "default").lower())
    raise TypeError("connection must be a DbApiHook or a callable returning a DB-API connection")


#: How a NUL character is stored where the database cannot hold it (PostgreSQL text): the four
#: characters backslash, x, 0, 0 -- the form Python's ``backslashreplace`` uses for bytes.
NUL_ESCAPE = "\\x00"


def escape_nul(data: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
    """``data`` with NUL characters in its string columns written as :data:`NUL_ESCAPE`.

    PostgreSQL text cannot hold NUL (COPY and INSERT both fail on it), yet it is valid UTF-8
    that POLYV accepts: without this a confirmed item could never be reported. Columns
    without NUL (nearly always all of them) are passed through untouched.
    """
    columns = list(data.columns)
    changed = False
    for i, column in enumerate(columns):
        if pa.types.is_string(column.type) and pc.any(pc.match_substring(column, "\x00")).as_py():
            columns[i] = pc.replace_substring(column, "\x00", NUL_ESCAPE)
            changed = True
    if not changed:
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.record_batch(columns, schema=data.schema)
    return pa.Table.from_arrays(columns, schema=data.schema)


def copy_into(cur: Any, table: str, columns_sql: str, data: pa.Table | pa.RecordBatch) -> None:
    """Append ``data`` with PostgreSQL's ``COPY ... FROM STDIN`` (psycopg2 or psycopg 3)."""
    buf = io.BytesIO()
    # Arrow quotes every string and leaves nulls as bare empty fields, which is exactly how
    # PostgreSQL's CSV format tells NULL ("") from an empty string ('""').
    pa_csv.write_csv(data, buf, pa_csv.WriteOptions(include_header=False))
    sql = f"COPY {table} ({columns_sql}) FROM STDIN WITH (FORMAT csv)"
    if hasattr(cur, "copy_expert"):  # psycopg2
        buf.seek(0)
        cur.copy_expert(sql, buf)
    else:  # psycopg 3
        with cur.copy(sql) as copy:
            copy.write(buf.getbuffer())


def insert_rows(
    cur: Any, table: str, columns_sql: str, placeholder: str, data: pa.Table | pa.RecordBatch, chunk_rows: int = 5_000
) -> None:
    """Append ``data`` with ``executemany`` in chunks: the path for databases without COPY."""
    marks = ", ".join([placeholder] * data.num_columns)
    sql = f"INSERT INTO {table} ({columns_sql}) VALUES ({marks})"
    with suppress(AttributeError):
        cur.fast_executemany = True  # pyodbc's bulk path; other drivers ignore it
    for start in range(0, data.num_rows, chunk_rows):
        part = data.slice(start, chunk_rows)
        cur.executemany(sql, list(zip(*(part.column(i).to_pylist() for i in range(part.num_columns)), strict=True)))


# ---- cleanup ---------------------------------------------------------------------------------
@contextmanager
def closing(cur: Any) -> Iterator[Any]:
    """``cur``, closed on the way out; a failure to close is logged, never raised.

    It is logged at debug level when the block itself failed (its error is the one that
    matters, and a cursor on a broken connection rarely closes), else as a warning.
    """
    failed = True
    try:
        yield cur
        failed = False
    finally:
        try:
            cur.close()
        except Exception as exc:
            log.log(
                logging.DEBUG if failed else logging.WARNING,
                "could not close a database cursor: %s: %s",
                type(exc).__name__,
                exc,
            )


@contextmanager
def cursor(conn: Any) -> Iterator[Any]:
    """A new cursor of ``conn``, closed on the way out (see :func:`closing`)."""
    with closing(conn.cursor()) as cur:
        yield cur


@contextmanager
def transaction(conn: Any) -> Iterator[None]:
    """Commit ``conn`` if the block (and the commit) succeeds, else roll back and re-raise.

    The rollback's own failure is logged at debug level: the block's error is what the caller
    needs, and a connection that cannot roll back is usually already gone.
    """
    try:
        yield
        conn.commit()
    except Exception:
        rollback_quietly(conn)
        raise


def rollback_quietly(conn: Any) -> None:
    """Roll back ``conn``; a failure is logged at debug level (PostgreSQL needs this after any
    error before it accepts the next statement, and a dead connection needs nothing)."""
    try:
        conn.rollback()
    except Exception as exc:
        log.debug("could not roll back a database connection: %s: %s", type(exc).__name__, exc)


def close_quietly(conn: Any) -> None:
    """Close ``conn``; a failure is logged at debug level (nothing is lost: the server ends
    the session and rolls back whatever was not committed)."""
    try:
        conn.close()
    except Exception as exc:
        log.debug("could not close a database connection: %s: %s", type(exc).__name__, exc)
