"""DB-API plumbing shared by the SQL source, the report table and the state table.

Each takes either an Airflow common-sql ``DbApiHook`` (anything with ``get_conn()``) or a
zero-argument callable returning a DB-API connection; :func:`resolve` turns both into a
:class:`Target`. Bulk writes take each engine's fast path (:func:`bulk_insert`): PostgreSQL's
``COPY``, MySQL/MariaDB multi-row ``INSERT`` statements, DuckDB reading the Arrow data itself;
any other database gets ``executemany`` in chunks.

Errors are classified (:mod:`polyv_connector.warehouse.db_errors`): a database that cannot be
reached now is :class:`~polyv_connector.errors.DependencyUnavailable` (exit 75, retried), bad
credentials or an unknown database the caller's configuration error (exit 2). A MySQL
connection whose character set is not utf8mb4 gets a warning when it opens (:func:`check_charset`).

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from polyv_connector.errors import ConfigError
from polyv_connector.warehouse.db_errors import database_error
from polyv_connector.warehouse.dialect import PG_DRIVERS, dialect_named, dialect_of_connection, driver_of

log = logging.getLogger("polyv_connector")

__all__ = ["PG_DRIVERS", "Target", "bulk_insert", "check_charset", "driver_of", "resolve"]


@dataclass(frozen=True)
class Target:
    """How to reach a database and write SQL for it."""

    connect: Callable[[], Any]
    placeholder: str = "%s"
    identifier_format: str = '"{}"'
    dialect: str = "default"
    #: Settings whose connection's character set was checked already (one warning per run).
    checked: set[str] = field(default_factory=set, compare=False, repr=False)

    def open(self, error: type[ConfigError], setting: str, what: str) -> Any:
        """A new connection; if it cannot be had, :class:`DependencyUnavailable` when the database
        is unreachable for now, else ``error(setting, ...)`` (credentials, unknown database)."""
        try:
            conn = self.connect()
        except Exception as exc:
            raise database_error(exc, setting, f"cannot connect to the {what} database", config=error) from exc
        if setting not in self.checked:
            self.checked.add(setting)
            check_charset(conn, setting)
        return conn


#: Parameter markers of the dialects whose drivers do not take ``%s``.
_PLACEHOLDERS = {"duckdb": "?", "sqlite": "?"}


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
        # A factory says nothing about its database until it connects: a named dialect gives
        # its quoting (MySQL's backticks) and parameter marker (DuckDB's ``?``).
        known = dialect_named(dialect) if dialect else None
        return Target(
            connection,
            placeholder or (_PLACEHOLDERS.get(known.name, "%s") if known else "%s"),
            identifier_format or (known.identifier_format if known else '"{}"'),
            (dialect or "default").lower(),
        )
    raise TypeError("connection must be a DbApiHook or a callable returning a DB-API connection")


#: How a NUL character is stored where the database cannot hold it (PostgreSQL text): the four
#: characters backslash, x, 0, 0 -- the form Python's ``backslashreplace`` uses for bytes.
NUL_ESCAPE = "\\x00"


def _may_hold_nul(column: pa.Array | pa.ChunkedArray) -> bool:
    """False when no string of ``column`` can hold NUL: no zero byte in its data buffers (a
    scan at memory speed; a slice's buffer may hold other values too, so True may be wrong)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    for chunk in chunks:
        data = chunk.buffers()[2]
        if data is not None and data.size and np.frombuffer(data, np.uint8).min() == 0:
            return True
    return False


def escape_nul(data: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
    """``data`` with NUL characters in its string columns written as :data:`NUL_ESCAPE`.

    PostgreSQL text cannot hold NUL (COPY and INSERT both fail on it), yet it is valid UTF-8
    that POLYV accepts: without this a confirmed item could never be reported. Columns
    without NUL (nearly always all of them) are passed through untouched.
    """
    columns = list(data.columns)
    changed = False
    for i, column in enumerate(columns):
        if (
            pa.types.is_string(column.type)
            and _may_hold_nul(column)
            and pc.any(pc.match_substring(column, "\x00")).as_py()
        ):
            columns[i] = pc.replace_substring(column, "\x00", NUL_ESCAPE)
            changed = True
    if not changed:
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.record_batch(columns, schema=data.schema)
    return pa.Table.from_arrays(columns, schema=data.schema)


def _timestamps_as_text(data: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
    """``data`` with each timestamp column as the text the CSV writer would print for it.

    The CSV writer formats every timestamp on its own (four fifths of a report slice's CSV
    time, for its ``syncedAt``); a column repeats a few distinct times (one per answer), so
    each distinct one is formatted once (the same cast to text the writer uses) and taken."""
    columns = list(data.columns)
    fields = list(data.schema)
    changed = False
    for i, column in enumerate(columns):
        if pa.types.is_timestamp(column.type):
            values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
            encoded = pc.dictionary_encode(values)
            columns[i] = pc.cast(encoded.dictionary, pa.string()).take(encoded.indices)
            fields[i] = pa.field(fields[i].name, pa.string())
            changed = True
    if not changed:
        return data
    schema = pa.schema(fields)
    if isinstance(data, pa.RecordBatch):
        return pa.record_batch(columns, schema=schema)
    return pa.Table.from_arrays(columns, schema=schema)


def copy_into(cur: Any, table: str, columns_sql: str, data: pa.Table | pa.RecordBatch) -> None:
    """Append ``data`` with PostgreSQL's ``COPY ... FROM STDIN`` (psycopg2 or psycopg 3)."""
    # The same text in quotes: PostgreSQL's CSV reads a quoted timestamp as the bare one.
    data = _timestamps_as_text(data)
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


#: PostgreSQL's binary COPY: signature, flags, header extension length; and the trailer.
_PG_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_PG_BINARY_TRAILER = b"\xff\xff"


def copy_int64_into(cur: Any, table: str, columns_sql: str, columns: list[np.ndarray]) -> None:
    """Append rows of 64-bit integers (one array per column, none null) with PostgreSQL's
    binary ``COPY``: NumPy lays the rows out (field count, then length and big-endian value of
    each field), so no number is printed or parsed as text."""
    n = len(columns[0])
    layout = [("fields", ">i2")]
    for i in range(len(columns)):
        layout += [(f"len{i}", ">i4"), (f"value{i}", ">i8")]
    rows = np.empty(n, np.dtype(layout))
    rows["fields"] = len(columns)
    for i, values in enumerate(columns):
        rows[f"len{i}"] = 8
        rows[f"value{i}"] = np.asarray(values, np.int64)
    data = _PG_BINARY_HEADER + rows.tobytes() + _PG_BINARY_TRAILER
    sql = f"COPY {table} ({columns_sql}) FROM STDIN WITH (FORMAT binary)"
    if hasattr(cur, "copy_expert"):  # psycopg2
        cur.copy_expert(sql, io.BytesIO(data))
    else:  # psycopg 3
        with cur.copy(sql) as copy:
            copy.write(data)


def check_charset(conn: Any, setting: str) -> str | None:
    """Warn when ``conn`` would lose characters (:meth:`Dialect.charset_problem
    <polyv_connector.warehouse.dialect.Dialect.charset_problem>`: a MySQL/MariaDB connection
    that does not speak utf8mb4); return the problem, ``None`` if there is none.

    With ``charset=utf8`` (utf8mb3: the MySQL provider's own example) the server turns every
    4-byte character (emoji, rarer CJK) into ``?`` without an error, in what is read and what
    is written alike. Called when a connection opens, so the warning comes before anything is
    sent; a failure to check is logged at debug level and sends nothing astray.
    """
    try:
        problem = dialect_of_connection(conn).charset_problem(conn)
    except Exception as exc:
        log.debug("could not read the connection's character set: %s", exc)
        return None
    if problem:
        log.warning("%s: %s", setting, problem)
    return problem


def bulk_insert(
    conn: Any,
    table: str,
    columns: list[str],
    data: pa.Table | pa.RecordBatch,
    *,
    identifier_format: str = '"{}"',
    placeholder: str = "%s",
    chunk_rows: int = 5_000,
    use_copy: bool = True,
) -> str:
    """Append ``data`` (columns in the order of ``columns``) to ``table`` the engine's fastest way.

    PostgreSQL (psycopg 3, psycopg2): ``COPY ... FROM STDIN``, NUL escaped (:func:`escape_nul`).
    MySQL/MariaDB: multi-row ``INSERT`` statements of ``chunk_rows`` rows (time-zone-aware
    timestamps written as UTC, since ``DATETIME`` has no zone). DuckDB: the Arrow data is
    registered as a view and inserted with one ``INSERT ... SELECT``. Anything else:
    ``executemany`` in chunks. Runs in the connection's transaction (the caller commits);
    returns the path taken (``copy``, ``multirow``, ``arrow``, ``executemany``).
    """
    from polyv_connector.warehouse.identifiers import quote_identifier

    columns_sql = ", ".join(quote_identifier(c, identifier_format) for c in columns)
    engine = dialect_of_connection(conn).name
    if engine == "postgresql":
        data = escape_nul(data)
        if use_copy and driver_of(conn) in PG_DRIVERS:
            with cursor(conn) as cur:
                copy_into(cur, table, columns_sql, data)
            return "copy"
    if engine == "duckdb" and hasattr(conn, "register"):
        _duckdb_insert(conn, table, columns_sql, _naive_utc(data))
        return "arrow"
    if engine == "mysql":
        with cursor(conn) as cur:
            _multirow_insert(cur, table, columns_sql, _naive_utc(data), chunk_rows)
        return "multirow"
    with cursor(conn) as cur:
        insert_rows(cur, table, columns_sql, placeholder, data, chunk_rows)
    return "executemany"


def _naive_utc(data: pa.Table | pa.RecordBatch) -> pa.Table:
    """``data`` as a table whose time-zone-aware timestamps are naive UTC (``DATETIME``/``TIMESTAMP``)."""
    table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    for i, column in enumerate(table.columns):
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            table = table.set_column(i, table.field(i).name, column.cast(pa.timestamp(column.type.unit)))
    return table


def _duckdb_insert(conn: Any, table: str, columns_sql: str, data: pa.Table) -> None:
    # DuckDB scans a registered Arrow table in place: no row ever becomes a Python object.
    view = f"polyv_bulk_{id(data):x}"
    positional = data.rename_columns([f"c{i}" for i in range(data.num_columns)])
    conn.register(view, positional)
    try:
        select = ", ".join(f"c{i}" for i in range(data.num_columns))
        conn.execute(f"INSERT INTO {table} ({columns_sql}) SELECT {select} FROM {view}")
    finally:
        conn.unregister(view)


def _multirow_insert(cur: Any, table: str, columns_sql: str, data: pa.Table, chunk_rows: int) -> None:
    # One INSERT with many VALUES tuples per chunk: one round trip and one parse per chunk. The
    # literals are written column-wise by Arrow (the drivers' own parameter binding escapes one
    # Python object at a time: about 15k report rows/s against several times that here), with
    # the escaping of mysql_real_escape_string for the session's sql_mode.
    no_backslash = _no_backslash_escapes(cur)
    literals = [_mysql_literals(column, no_backslash) for column in data.columns]
    rows = pc.binary_join_element_wise(*literals, ",") if literals else pa.array([], pa.string())
    sizes = pc.binary_length(rows).to_numpy(zero_copy_only=False).astype(np.int64) + 3
    # Statements of at most chunk_rows rows and about 4 MB: under max_allowed_packet's 16 MB default.
    cut = np.cumsum(sizes) // _MAX_STATEMENT_BYTES
    start = 0
    while start < len(rows):
        stop = min(start + chunk_rows, len(rows))
        stop = start + max(1, int(np.searchsorted(cut[start:stop], cut[start], side="right")))
        values = "),(".join(rows.slice(start, stop - start).to_pylist())
        cur.execute(f"INSERT INTO {table} ({columns_sql}) VALUES ({values})")
        start = stop


_MAX_STATEMENT_BYTES = 4 << 20


def _no_backslash_escapes(cur: Any) -> bool:
    cur.execute("SELECT @@SESSION.sql_mode")
    row = cur.fetchone()
    return "NO_BACKSLASH_ESCAPES" in str(row[0] if row else "").upper()


def _mysql_literals(column: pa.ChunkedArray | pa.Array, no_backslash: bool) -> pa.Array:
    """Each value of ``column`` as a MySQL SQL literal (``NULL`` for nulls)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    typ = column.type
    if pa.types.is_integer(typ) or pa.types.is_boolean(typ):
        text = column.cast(pa.int8()) if pa.types.is_boolean(typ) else column
        return pc.fill_null(text.cast(pa.string()), "NULL")
    if pa.types.is_timestamp(typ):
        # Arrow writes a naive timestamp as 'YYYY-MM-DD HH:MM:SS.ffffff' (its unit's fraction),
        # which DATETIME(6) reads whole; ten times faster than strftime.
        text = column.cast(pa.string())
        return pc.fill_null(pc.binary_join_element_wise("'", text, "'", ""), "NULL")
    text = column.cast(pa.string())
    if no_backslash:
        text = pc.replace_substring(text, "'", "''")
    else:
        for plain, escaped in (("\\", "\\\\"), ("'", "\\'"), ("\x00", "\\0"), ("\x1a", "\\Z")):
            text = pc.replace_substring(text, plain, escaped)
    return pc.fill_null(pc.binary_join_element_wise("'", text, "'", ""), "NULL")


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
