"""SQL input: a query or a table read through any DB-API 2 connection, in chunks.

Works with anything that hands out a DB-API connection: a plain factory (``lambda:
psycopg2.connect(...)``) or an Airflow common-sql ``DbApiHook`` (its ``get_conn``). Rows are
read in chunks of ``batch_rows`` (``cursor.fetchmany``), streamed where the driver would otherwise hold
the whole result in client memory on ``execute``: psycopg 3 over libpq 17 or later streams the
result in chunks of rows (``cursor.stream``, libpq's chunked mode: the socket holds the rest);
psycopg2 and older libpq get a *named* cursor, so the server keeps the result and sends one
chunk per ``FETCH``; MySQL and
MariaDB drivers an unbuffered cursor (mysqlclient and PyMySQL ``SSCursor``,
mysql-connector-python ``buffered=False``), which reads rows off the socket as they are fetched.
DuckDB hands its result over as Arrow record batches (a relation's ``to_arrow_reader``), so
no row becomes a Python object there. Other drivers stream as far as their cursor does.

Each chunk becomes an Arrow record batch holding the requested columns, named as requested.
Column names are matched exactly, else case-insensitively when that is unambiguous, because
databases fold unquoted identifiers (PostgreSQL to lower case, Snowflake and Oracle to upper).
Values keep their SQL types where Arrow infers one (numbers, dates, timestamps, decimals,
text); JSON values become JSON text and other Python objects (UUIDs, intervals, times) their
``str()``. :mod:`polyv_connector.items.text` then turns every type into what POLYV receives.

A query is untrusted text (a DAG param may carry it): it must parse as one read-only query
(:func:`polyv_connector.warehouse.readonly.check_read_query`), checked before any connection
is opened, and every connection the source opens reads inside a read-only transaction where
the database has one (:func:`~polyv_connector.warehouse.readonly.begin_read_only`), confined to
its database by the engine's own settings (:mod:`polyv_connector.warehouse.confine`).
"""

from __future__ import annotations

import inspect
import json
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, suppress
from functools import cache, partial
from itertools import islice
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from polyv_connector.config import ColumnMapping
from polyv_connector.errors import ConfigError, DependencyUnavailable, InputError
from polyv_connector.items.convert import rows_in_slice
from polyv_connector.model import KNOWN_COLUMN
from polyv_connector.partitioning import WHOLE, Slice
from polyv_connector.warehouse import confine, dbapi, readonly
from polyv_connector.warehouse.db_errors import classify, database_error, describe
from polyv_connector.warehouse.dialect import (
    Dialect,
    dialect_named,
    dialect_of_connection,
    driver_dialect_name,
    driver_of,
)
from polyv_connector.warehouse.identifiers import check_table_name, quote_identifier

log = logging.getLogger("polyv_connector")

Parameters = Sequence[Any] | Mapping[str, Any] | None

# A row the diff in the warehouse leaves out: its key appears once and POLYV has its value.
_UNCHANGED = "(polyv_src.polyv_n = 1 AND polyv_src.polyv_seen = 1)"


class UnchangedFilter(Protocol):
    """What the diff in the warehouse needs of the sync state (``SqlStateTable`` has it)."""

    def with_unchanged(self, rows: str, viewer: str, field: str, value: str) -> str:
        """SQL: the query ``rows`` plus ``polyv_seen`` (1 for rows POLYV already has, else 0)."""
        ...

    def exact(self, expr: str) -> str:
        """SQL: ``expr`` as a value that groups by its bytes (MySQL's collations fold case)."""
        ...


def resolve_columns(requested: Sequence[str], available: Sequence[str], where: str, setting: str) -> list[int]:
    """Positions in ``available`` of each ``requested`` column (exact, else unique case-insensitive)."""
    exact = {name: i for i, name in enumerate(available)}
    folded: dict[str, list[int]] = {}
    for i, name in enumerate(available):
        folded.setdefault(name.casefold(), []).append(i)
    positions, missing = [], []
    for name in requested:
        if name in exact:
            positions.append(exact[name])
        elif len(folded.get(name.casefold(), [])) == 1:
            positions.append(folded[name.casefold()][0])
        else:
            missing.append(name)
    if missing:
        raise InputError(
            setting,
            f"{where}: missing column(s) {', '.join(missing)} (found: {', '.join(available) or 'none'}); "
            "alias the columns in the query or set the column mapping (viewer_id_column, "
            "field_id_column, value_column or fields) to match",
        )
    return positions


class SqlSource:
    """Rows of ``sql`` (or of the whole ``table``) read through a DB-API connection.

    :param connection: a ``DbApiHook`` (anything with ``get_conn()``) or a zero-argument
        callable returning a new DB-API connection. The source opens and closes its own
        connections.
    :param sql: one read-only query (a trailing ``;`` is dropped); anything else is a
        :class:`ConfigError` naming ``setting``. Exactly one of ``sql`` and ``table``.
    :param table: ``[schema.]table``; only the mapped columns are selected.
    :param parameters: bound parameters of ``sql``, in the driver's paramstyle.
    :param identifier_format: how to quote an identifier; default the hook's
        ``escape_word_format`` or ``"{}"``.
    :param server_side_cursor: use the PostgreSQL named-cursor fast path when the driver allows.
    :param setting: the setting name error messages point at.
    :param dialect: the database's SQL dialect for the query check (an Airflow ``dialect_name``
        or a sqlglot name); default the hook's, else the driver's once connected.
    :param skip_unchanged: an :class:`UnchangedFilter` (the warehouse state table, built with
        ``load_for_local_diff=False``): rows it calls unchanged are filtered out in the database,
        so only changed rows leave the warehouse (long form only); :meth:`count_unchanged`
        counts them. ``None`` (default): every row is read.
    :param duckdb_external_access: leave a DuckDB connection able to read files, URLs and
        extensions (the DAG author's opt-out; never from a trigger). Default: every connection
        the source opens is confined to its database (:mod:`polyv_connector.warehouse.confine`).
    """

    def __init__(
        self,
        connection: Any,
        *,
        sql: str | None = None,
        table: str | None = None,
        parameters: Parameters = None,
        identifier_format: str | None = None,
        server_side_cursor: bool = True,
        setting: str | None = None,
        skip_unchanged: UnchangedFilter | None = None,
        dialect: str | None = None,
        duckdb_external_access: bool = False,
    ) -> None:
        sql = (sql or "").strip() or None
        table = (table or "").strip() or None
        self.setting = setting or ("source_table" if table and not sql else "source_sql")
        if bool(sql) == bool(table):
            raise ConfigError(self.setting, "give exactly one of a SQL query and a table name")
        self.table = check_table_name(table, self.setting) if table else None
        self.parameters = parameters
        self._target = dbapi.resolve(connection, identifier_format=identifier_format, dialect=dialect)
        # The query is checked in the database's dialect before anything runs: now when the hook
        # names it, else (a plain connection factory) on the first connection, from its driver.
        self._raw_sql = sql
        self.sql: str | None = None
        dialect_name = readonly.sqlglot_dialect(self._target.dialect)
        if sql and dialect_name:
            self.sql = readonly.check_read_query(sql, dialect_name, self.setting)
        self.identifier_format = self._target.identifier_format
        self.server_side_cursor = server_side_cursor
        self.duckdb_external_access = duckdb_external_access
        self.skip_unchanged = skip_unchanged
        self._columns: list[str] | None = None  # the relation's column names, once known
        self._text_columns: set[str] = set()  # those the database holds as text
        self._partition_dialect: Dialect | None = None

    @property
    def location(self) -> str:
        """A short description for messages and lineage: the table, or ``query``."""
        return self.table or "query"

    # ---- schema ------------------------------------------------------------------------------
    def _probe_sql(self) -> str:
        # The relation with no rows: cheap everywhere, and it still yields cursor.description.
        relation = self.table or f"({self._query()}\n) polyv_source"
        return f"SELECT * FROM {relation} WHERE 1=0"

    def columns(self) -> list[str] | None:
        """The relation's column names, from a zero-row probe; ``None`` if the probe cannot run.

        A query that cannot be wrapped in a subquery (some dialects refuse ``ORDER BY`` there)
        is not an error: its columns are then checked on the first chunk instead.
        """
        if self._columns is not None:
            return self._columns
        conn = self._open()
        try:
            with dbapi.cursor(conn) as cur:
                cur.execute(self._probe_sql(), *self._params())
                self._columns = [d[0] for d in cur.description or ()]
                # What a partition run needs to filter in the query (see _partition_sql).
                # DuckDB's connection class lives in its C module ``_duckdb``.
                driver = driver_of(conn).removeprefix("_")
                self._text_columns = {d[0] for d in cur.description or () if _is_text_type(driver, d[1])}
                self._partition_dialect = dialect_named(driver_dialect_name(driver))
        except Exception as exc:
            if classify(exc) == "temporary":
                raise database_error(exc, self.setting, "cannot read the source") from exc
            if self.table:
                raise InputError(self.setting, f"cannot read table {self.table}: {describe(exc)}") from exc
            if readonly.is_read_only_violation(exc):
                raise self._failed(exc) from exc
            log.info(
                "could not probe the source query's columns (%s); checking them on the first chunk instead",
                type(exc).__name__,
            )
            return None
        finally:
            _close(conn)
        return self._columns

    def check_columns(self, mapping: ColumnMapping) -> None:
        """Fail before anything is sent if the query or table lacks a mapped column."""
        names = self.columns()
        if names is not None:
            resolve_columns(mapping.source_columns, names, self.location, self.setting)

    # ---- rows --------------------------------------------------------------------------------
    def _params(self) -> tuple[Any, ...]:
        # The table form binds nothing; some drivers reject an empty parameter list.
        return () if self.parameters is None or self.table else (self.parameters,)

    def _select(self, columns: Sequence[str], part: Slice = WHOLE) -> str:
        base = self._sliced(self._base_select(columns), columns, part)
        if self.skip_unchanged is None:
            return base
        return f"SELECT * FROM ({self._diffed(base, columns)}) polyv_src WHERE NOT {_UNCHANGED}"

    def _counted(self, base: str, columns: Sequence[str]) -> str:
        """``base`` plus ``polyv_n``: how many source rows share the row's (viewer, field).

        Only a key that appears once can be filtered out as unchanged: with two rows for one
        key the engine must see both, to report the duplicate or the conflict.
        """
        viewer, field, _ = self._diff_columns(columns)
        # Byte-exact keys: under a case-insensitive collation u1 and U1 would count as one key.
        exact = self.skip_unchanged.exact if self.skip_unchanged is not None else (lambda e: e)
        return (
            f"SELECT polyv_base.*, COUNT(*) OVER (PARTITION BY {exact(f'polyv_base.{viewer}')}, "
            f"{exact(f'polyv_base.{field}')}) AS polyv_n FROM ({base}\n) polyv_base"
        )

    def _diff_columns(self, columns: Sequence[str]) -> tuple[str, str, str]:
        names = self.columns()
        if names is None or len(columns) != 3:
            raise ConfigError(
                self.setting,
                "the diff in the warehouse needs a long-form source whose columns "
                "can be probed (viewerId, customFieldId, customFieldValue)",
            )
        viewer, field, value = (names[i] for i in resolve_columns(columns, names, self.location, self.setting))
        return tuple(quote_identifier(n, self.identifier_format) for n in (viewer, field, value))  # type: ignore[return-value]

    def _diffed(self, base: str, columns: Sequence[str]) -> str:
        """``base`` with ``polyv_n`` (see :meth:`_counted`) and ``polyv_seen`` (the state has it)."""
        if self.skip_unchanged is None:
            raise ConfigError(self.setting, "the diff in the warehouse needs skip_unchanged (the state table)")
        names = self.columns() or []
        viewer, field, value = (names[i] for i in resolve_columns(columns, names, self.location, self.setting))
        return self.skip_unchanged.with_unchanged(self._counted(base, columns), viewer, field, value)

    def count_unchanged_sql(self, columns: Sequence[str], part: Slice = WHOLE) -> str:
        """The query of :meth:`count_unchanged` (one join of the hashed rows and the state)."""
        base = self._diffed(self._sliced(self._base_select(columns), columns, part), columns)
        return f"SELECT COUNT(*) FROM ({base}) polyv_src WHERE {_UNCHANGED}"

    def count_unchanged(self, columns: Sequence[str], part: Slice = WHOLE) -> int:
        """How many source rows the warehouse diff leaves out (they never leave the warehouse)."""
        conn = self._open()
        try:
            with dbapi.cursor(conn) as cur:
                try:
                    cur.execute(self.count_unchanged_sql(columns, part), *self._params())
                except Exception as exc:
                    raise self._failed(exc) from exc
                return int(cur.fetchone()[0])
        finally:
            _close(conn)

    def unchanged_in_source(self, columns: Sequence[str], part: Slice = WHOLE) -> int | None:
        """Rows the warehouse diff leaves out, or ``None`` when the diff is not in the warehouse."""
        return None if self.skip_unchanged is None else self.count_unchanged(columns, part)

    def _base_select(self, columns: Sequence[str]) -> str:
        if not self.table:
            return self._query()
        names = self.columns() or []
        picked = [names[i] for i in resolve_columns(columns, names, self.location, self.setting)]
        select_list = ", ".join(quote_identifier(n, self.identifier_format) for n in picked)
        return f"SELECT {select_list} FROM {self.table}"

    def _failed(self, exc: Exception) -> InputError | DependencyUnavailable:
        """The error of a source query the database refused (a write gets its own message), or
        :class:`DependencyUnavailable` when the database failed for now (lost, locked, busy)."""
        if classify(exc) == "temporary":
            return DependencyUnavailable(self.setting, f"the source query failed, retry later: {describe(exc)}")
        if readonly.is_read_only_violation(exc):
            return InputError(
                self.setting,
                "the source query tried to write, and the source is read in a read-only "
                f"transaction: {type(exc).__name__}: {exc}".rstrip(),
            )
        return InputError(self.setting, f"the source query failed: {describe(exc)}")

    def _query(self) -> str:
        """The checked query; with a plain factory, a first connection names the dialect to check it in."""
        if self.sql is None and self._raw_sql:
            _close(self._open())
        if self.sql is None:
            raise RuntimeError("the source has no query")
        return self.sql

    def _open(self) -> Any:
        """A new connection in a read-only transaction, the query checked (nothing run yet)."""
        conn = self._target.open(InputError, self.setting, "source")
        try:
            confine.confine(conn, self.setting, duckdb_external_access=self.duckdb_external_access)
            if self._raw_sql and self.sql is None:
                dialect_name = readonly.dialect_of_driver(conn)
                self.sql = readonly.check_read_query(self._raw_sql, dialect_name, self.setting)
            readonly.begin_read_only(conn, self.setting)
        except BaseException:
            _close(conn)
            raise
        return conn

    def _cursor(self, conn: Any, batch_rows: int) -> Any:
        if self.server_side_cursor and dbapi.driver_of(conn) in dbapi.PG_DRIVERS:
            # A named cursor is a server-side cursor in both psycopg 3 and psycopg2: each
            # fetchmany() is one FETCH, and the client never holds more than one chunk.
            cur = conn.cursor(name=f"polyv_source_{uuid.uuid4().hex[:12]}")
            with suppress(AttributeError):
                cur.itersize = batch_rows
            return cur
        if self.server_side_cursor and dialect_of_connection(conn).name == "mysql":
            return mysql_streaming_cursor(conn)
        log.info(
            "reading %s through the generic DB-API cursor (fetchmany): no streaming path is known for "
            "the %s driver, whose cursor may hold the whole result in memory",
            self.location,
            dbapi.driver_of(conn),
        )
        return conn.cursor()

    # ---- partitions --------------------------------------------------------------------------
    def _partition_sql(self, columns: Sequence[str], part: Slice) -> str | None:
        """A condition on ``polyv_part``'s viewerId column that keeps the rows of ``part``, or
        ``None`` when this database cannot compute the partition as the connector does (then
        rows are filtered as they are read).

        Only for a text viewerId column (the text hashed must be the text sent: a number or a
        date may print differently in SQL) on an engine with ``md5()`` (PostgreSQL,
        MySQL/MariaDB, DuckDB). Null or blank (``TRIM() = ''``): partition 0, as in Python.
        """
        names = self.columns()
        dialect = self._partition_dialect
        if part.whole or names is None or dialect is None or dialect.name not in _PARTITION_DIALECTS:
            return None
        viewer = names[resolve_columns(columns[:1], names, self.location, self.setting)[0]]
        if viewer not in self._text_columns:
            return None
        v = "polyv_part." + dialect.quote(viewer)  # the connection's quoting (a factory names none)
        return (
            f"(CASE WHEN {v} IS NULL OR TRIM({v}) = '' THEN 0 "
            f"ELSE {dialect.partition_hash(v)} % {part.partitions} END) = {part.partition}"
        )

    def _sliced(self, base: str, columns: Sequence[str], part: Slice) -> str:
        """``base`` limited to the rows of ``part`` in the database, when it can."""
        condition = None if part.whole else self._partition_sql(columns, part)
        if condition is None:
            if not part.whole and self.skip_unchanged is not None:
                raise ConfigError(
                    self.setting,
                    "the diff in the warehouse of a partition run needs a database that computes "
                    "the partition itself (PostgreSQL, MySQL/MariaDB or DuckDB, a text viewerId column)",
                )
            return base
        return f"SELECT polyv_part.* FROM ({base}\n) polyv_part WHERE {condition}"

    def batches(self, columns: list[str], batch_rows: int, part: Slice = WHOLE) -> Iterator[pa.RecordBatch]:
        """Yield record batches of at most ``batch_rows`` rows holding ``columns``, in read order.

        With ``part``, only that slice's rows: filtered in the query where the database can
        compute the partition (a text viewerId column on PostgreSQL, MySQL/MariaDB or DuckDB),
        else filtered here as each chunk is read.
        """
        in_query = not part.whole and self._partition_sql(columns, part) is not None
        conn = self._open()
        try:
            if dialect_of_connection(conn).name == "duckdb" and hasattr(conn, "sql"):
                for batch in self._arrow_batches(conn, columns, batch_rows, part):
                    if batch := self._in_slice(batch, columns, part, in_query):
                        yield batch
                return
            streamed = self.server_side_cursor and streams_in_chunks(conn)
            cursor = conn.cursor() if streamed else self._cursor(conn, batch_rows)
            # Exited first: a stream left unread is cancelled before its cursor closes.
            with dbapi.closing(cursor) as cur, ExitStack() as stack:
                fetch: Callable[[], Sequence[Sequence[Any]]]
                try:
                    if streamed:
                        stream = cur.stream(self._select(columns, part), *self._params(), size=batch_rows)
                        stack.callback(stream.close)

                        def fetch() -> Sequence[Sequence[Any]]:
                            return list(islice(stream, batch_rows))

                    else:
                        cur.execute(self._select(columns, part), *self._params())
                        fetch = partial(cur.fetchmany, batch_rows)
                    rows = fetch()
                except InputError:
                    raise
                except Exception as exc:
                    raise self._failed(exc) from exc
                # psycopg2 named cursors describe the result only after the first fetch.
                names = [d[0] for d in cur.description or ()]
                if streamed and not rows and not names:
                    # A stream that yields no row describes nothing: the probe's names are the
                    # query's columns, checked the same way (none to check if it cannot run).
                    names = list(self.columns() or ())
                    if not names:
                        return
                positions = resolve_columns(columns, names, self.location, self.setting)
                known = self._known_position(names)
                while rows:
                    batch = rows_to_batch(rows, positions, columns)
                    if known is not None:  # the diff in the warehouse: what the state holds of each row
                        flags = pa.array([int(r[known]) for r in rows], pa.uint8())
                        batch = batch.append_column(KNOWN_COLUMN, flags)
                    if batch := self._in_slice(batch, columns, part, in_query):
                        yield batch
                    rows = fetch()
        finally:
            _close(conn)

    def _in_slice(
        self, batch: pa.RecordBatch, columns: list[str], part: Slice, in_query: bool
    ) -> pa.RecordBatch | None:
        """The rows of ``batch`` in ``part`` (``None`` if none)."""
        if not part.whole:
            kept = rows_in_slice(batch, columns[0], part, self.setting)
            if in_query and kept.num_rows != batch.num_rows:
                # The database's partition disagrees with ours: rows of this slice
                # may be missing from every partition's read. Stop, do not guess.
                raise InputError(
                    self.setting,
                    "the database computed a different partition than the connector for "
                    f"{batch.num_rows - kept.num_rows} viewerId(s); nothing was sent",
                )
            batch = kept
        return batch if batch.num_rows else None

    def _arrow_batches(self, conn: Any, columns: list[str], batch_rows: int, part: Slice) -> Iterator[pa.RecordBatch]:
        """DuckDB: the result as Arrow record batches, straight from the engine."""
        params = None if self.table or self.parameters is None else self.parameters
        try:
            reader = conn.sql(self._select(columns, part), params=params).to_arrow_reader(batch_rows)
        except InputError:
            raise
        except Exception as exc:
            raise self._failed(exc) from exc
        positions = resolve_columns(columns, reader.schema.names, self.location, self.setting)
        known = self._known_position(reader.schema.names)
        names = list(columns) + ([KNOWN_COLUMN] if known is not None else [])
        for batch in reader:
            if batch.num_rows:
                arrays = [arrow_column_to_source(batch.column(p)) for p in positions]
                if known is not None:
                    arrays.append(pc.cast(batch.column(known), pa.uint8()))
                yield pa.RecordBatch.from_arrays(arrays, names=names)

    def _known_position(self, names: Sequence[str]) -> int | None:
        """Where the diff in the warehouse put ``polyv_known`` (:data:`KNOWN_COLUMN`; None without the diff)."""
        if self.skip_unchanged is None:
            return None
        lowered = [n.lower() for n in names]
        return lowered.index(KNOWN_COLUMN) if KNOWN_COLUMN in lowered else None


def streams_in_chunks(conn: Any) -> bool:
    """Whether ``conn`` can stream a result in chunks of rows: psycopg 3.2 or later
    (``cursor.stream`` with a ``size``) over libpq 17 or later (its chunked rows mode). 1M rows
    of three text columns came in 0.56-0.64 s against 0.95-1.02 s through a named cursor's
    ``FETCH``es: the same values (text format both ways), one chunk held at a time either way."""
    if dbapi.driver_of(conn) != "psycopg":
        return False
    return _psycopg_streams_chunks()


@cache
def _psycopg_streams_chunks() -> bool:
    try:
        import psycopg
        from psycopg import pq
    except ImportError:  # pragma: no cover - a psycopg connection without psycopg
        return False
    return pq.version() >= 170000 and "size" in inspect.signature(psycopg.Cursor.stream).parameters


def mysql_streaming_cursor(conn: Any) -> Any:
    """An unbuffered cursor of a MySQL/MariaDB connection: rows stay on the server's socket
    until fetched (the drivers' default cursors read the whole result on ``execute``)."""
    driver = dbapi.driver_of(conn)
    if driver == "MySQLdb":
        import MySQLdb.cursors

        return conn.cursor(MySQLdb.cursors.SSCursor)
    if driver == "pymysql":
        import pymysql.cursors

        return conn.cursor(pymysql.cursors.SSCursor)
    if driver == "mysql":  # mysql-connector-python
        return conn.cursor(buffered=False)
    log.info("no unbuffered cursor known for the MySQL driver %s: its default cursor is used", driver)
    return conn.cursor()


def arrow_column_to_source(array: pa.Array) -> pa.Array:
    """An Arrow column a database produced, as :func:`column_to_arrow` would have built it."""
    typ = array.type
    if pat.is_large_string(typ) or pat.is_string_view(typ):
        return array.cast(pa.string())
    if pat.is_decimal(typ):
        # A column's decimals share its declared scale, so Arrow's text is each value's own.
        return array.cast(pa.string())
    if (
        pat.is_nested(typ)
        or isinstance(typ, pa.BaseExtensionType)
        or pat.is_time(typ)
        or pat.is_duration(typ)
        or pat.is_interval(typ)
    ):
        return _as_text(array.to_pylist())
    return array


#: Engines whose md5() the partition filter is pushed into (their Dialect.partition_hash).
_PARTITION_DIALECTS = frozenset({"postgresql", "mysql", "duckdb"})
#: Type codes of text columns in cursor.description, per driver: PostgreSQL type OIDs (text,
#: varchar; not char(n), whose padding SQL and the driver treat differently), MySQL field types
#: (VARCHAR, VAR_STRING, STRING), DuckDB type names.
_PG_TEXT_OIDS = frozenset({25, 1043})
_MYSQL_TEXT_TYPES = frozenset({15, 253, 254})


def _is_text_type(driver: str, type_code: Any) -> bool:
    if driver in ("psycopg", "psycopg2"):
        return type_code in _PG_TEXT_OIDS
    if driver in ("pymysql", "MySQLdb"):
        return type_code in _MYSQL_TEXT_TYPES
    if driver == "duckdb":
        return str(type_code).upper() == "VARCHAR"
    return False


def rows_to_batch(rows: Sequence[Sequence[Any]], positions: Sequence[int], names: Sequence[str]) -> pa.RecordBatch:
    """Columns ``positions`` of DB-API ``rows`` as a record batch with the given ``names``."""
    arrays = [column_to_arrow([row[p] for row in rows]) for p in positions]
    return pa.RecordBatch.from_arrays(arrays, names=list(names))


def column_to_arrow(values: list[Any]) -> pa.Array:
    """One column of Python values as Arrow, keeping the SQL type where Arrow has one."""
    try:
        array = pa.array(values, from_pandas=False)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return _as_text(values)
    typ = array.type
    if pat.is_decimal(typ):
        # Arrow gives a chunk's decimals one common scale, so '1.5' would become '1.50' when a
        # '12.50' shares its chunk: the text of a value must not depend on its neighbours.
        return _as_text(values)
    if pat.is_nested(typ):  # JSON objects and arrays: send their JSON text
        return _as_text(values)
    if (
        isinstance(typ, pa.BaseExtensionType)  # e.g. arrow.uuid: send the canonical str() form
        or pat.is_time(typ)
        or pat.is_duration(typ)
        or pat.is_interval(typ)
    ):
        return _as_text(values)
    return array


def _as_text(values: list[Any]) -> pa.Array:
    return pa.array([None if v is None else _text(v) for v in values], pa.string())


def _text(value: Any) -> str:
    if isinstance(value, (dict, list)):  # JSON/JSONB values, as drivers decode them
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _close(conn: Any) -> None:
    # End the read-only transaction explicitly: some pools reuse connections.
    dbapi.rollback_quietly(conn)
    dbapi.close_quietly(conn)
