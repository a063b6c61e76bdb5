"""What differs between the databases the warehouse layer writes SQL for, in one place.

One :class:`Dialect` per engine: PostgreSQL (and what speaks its protocol through psycopg),
MySQL/MariaDB (and what speaks its protocol: StarRocks, Doris, TiDB...), DuckDB, SQLite (the
tests' database) and a generic fallback for anything else. A dialect is plain data plus pure
functions writing SQL text; it never opens a connection. :func:`dialect_of` finds the dialect
of a DB-API connection (by its driver module), of an Airflow common-sql hook (its
``dialect_name``) or of a name.

Each dialect knows:

* identifier quoting (MySQL: backticks; double quotes are strings there) and its SQL types;
* how to turn any expression into its text (``CAST(x AS TEXT)``; MySQL ``CAST(x AS CHAR)``
  converted to utf8mb4, so MD5 sees UTF-8 bytes whatever the column's character set);
* a byte-exact comparison: MySQL's default collations compare case- and accent-insensitively
  and ignore trailing spaces, so ``'ABC'`` would equal ``'abc'``; there both sides are compared
  as binary strings;
* the hashes of :mod:`polyv_connector.fingerprints`' ``md5`` family, computed by the database
  itself: :meth:`Dialect.partition_hash` (the first 8 hex digits of the MD5 of the UTF-8 text,
  an unsigned 32-bit integer), :meth:`Dialect.key_hash` and :meth:`Dialect.value_hash` (signed
  64-bit integers), so the diff can run in the warehouse and the state can be migrated in SQL;
* index definitions within the engine's key limits (MySQL/InnoDB: 3072 bytes per key, so text
  columns are indexed by a prefix);
* whether the diff can run in the warehouse (:meth:`Dialect.check_warehouse_diff`: the generic
  fallback and SQLite cannot, and say so as a :class:`~polyv_connector.errors.ConfigError`
  naming ``diff_in_warehouse`` before anything runs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from polyv_connector.errors import ConfigError

#: Column kinds the tables use; each dialect maps them to its SQL types.
TEXT, BIGINT, TIMESTAMP, DOUBLE = "text", "bigint", "timestamp", "double"

#: MySQL/InnoDB's longest index key (DYNAMIC row format), and the bytes per utf8mb4 character.
MYSQL_MAX_KEY_BYTES = 3072
_UTF8MB4_BYTES = 4


def _md5_hex_py(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Dialect:
    """SQL for one database engine (this base class is the generic fallback).

    :param name: the dialect's name (``postgresql``, ``mysql``, ``duckdb``, ``sqlite``, or
        whatever Airflow called an engine this module does not know).
    :param sqlglot: sqlglot's name for it (``None``: unknown to sqlglot).
    :param identifier_format: how an identifier is quoted (``{}`` is the name).
    :param types: SQL type of each column kind.
    :param if_not_exists: ``CREATE TABLE/INDEX IF NOT EXISTS`` is understood.
    :param can_diff: the diff can run in the warehouse (MD5 and the casts below exist).
    :param max_key_bytes: the longest index key, where the engine has a limit that matters.
    :param clustered: the table is stored in its primary key (InnoDB): a primary key costs no
        extra index there, while elsewhere it is one more index beside the table.
    """

    name: str = "generic"
    sqlglot: str | None = None
    identifier_format: str = '"{}"'
    types: Mapping[str, str] = field(
        default_factory=lambda: {TEXT: "TEXT", BIGINT: "BIGINT", TIMESTAMP: "TIMESTAMP", DOUBLE: "DOUBLE PRECISION"}
    )
    if_not_exists: bool = False
    can_diff: bool = False
    max_key_bytes: int | None = None
    clustered: bool = False

    # ---- identifiers and types -----------------------------------------------------------------
    def quote(self, name: str) -> str:
        """``name`` quoted as an identifier, its closing quote character doubled."""
        return quote_with(name, self.identifier_format)

    def column_type(self, kind: str) -> str:
        """The SQL type of a column kind (:data:`TEXT`, :data:`BIGINT`, ...); any other kind is
        taken as a SQL type already."""
        return self.types.get(kind, kind)

    # ---- text and comparison -------------------------------------------------------------------
    def text(self, expr: str) -> str:
        """SQL: ``expr`` as text."""
        return f"CAST({expr} AS TEXT)"

    def binary(self, expr: str) -> str:
        """SQL: ``expr`` as a value that compares, groups and partitions by its bytes."""
        return expr

    def binary_equal(self, a: str, b: str) -> str:
        """SQL: ``a`` and ``b`` (text) hold the same bytes (``'ABC'`` never equals ``'abc'``)."""
        return f"{self.binary(a)} = {self.binary(b)}"

    def char_length(self, expr: str) -> str:
        """SQL: the number of characters (code points) of the text ``expr``."""
        return f"LENGTH({expr})"

    def concat(self, *parts: str) -> str:
        """SQL: the texts ``parts`` joined."""
        return "(" + " || ".join(parts) + ")"

    def literal(self, text: str) -> str:
        """``text`` as a SQL string literal."""
        return "'" + text.replace("'", "''") + "'"

    # ---- hashes --------------------------------------------------------------------------------
    def md5_hex(self, text_expr: str) -> str:
        """SQL: the 32 lower-case hex digits of the MD5 of the text ``text_expr``'s UTF-8 bytes."""
        return f"MD5({text_expr})"

    def hex_to_uint32(self, hex8: str) -> str:
        """SQL: 8 hex digits (a text expression) as an unsigned 32-bit integer (a BIGINT)."""
        raise NotImplementedError(f"the {self.name} dialect cannot read hex digits as an integer")

    def hex_to_int64(self, hex16: str) -> str:
        """SQL: 16 hex digits as a signed 64-bit integer (two's complement, as BIGINT stores it)."""
        hi = self.hex_to_uint32(f"SUBSTR({hex16}, 1, 8)")
        lo = self.hex_to_uint32(f"SUBSTR({hex16}, 9, 8)")
        # hi read as signed 32 bits, shifted by multiplication: no step leaves the BIGINT range.
        return f"((CASE WHEN {hi} >= 2147483648 THEN {hi} - 4294967296 ELSE {hi} END) * 4294967296 + {lo})"

    def partition_hash(self, expr: str) -> str:
        """SQL: the first 8 hex digits of MD5(``expr``'s UTF-8 text) as an unsigned 32-bit integer.

        The partition of a viewer is this modulo the number of partitions (see
        :func:`polyv_connector.fingerprints.partition_hashes`, which computes the same in Python).
        """
        return self.hex_to_uint32(f"SUBSTR({self.md5_hex(self.text(expr))}, 1, 8)")

    def key_text(self, viewer_text: str, field_text: str) -> str:
        """SQL: the length-prefixed key text ``<characters of viewerId>:<viewerId><customFieldId>``."""
        return self.concat(self.text(self.char_length(viewer_text)), "':'", viewer_text, field_text)

    def key_hash(self, viewer: str, field_id: str) -> str:
        """SQL: the ``md5`` family's 64-bit key of (``viewer``, ``field_id``), any expressions.

        Its high 32 bits are the viewer's :meth:`partition_hash`, its low 32 bits the first 32
        bits of the MD5 of the length-prefixed key text (see
        :func:`polyv_connector.fingerprints.md5_key_hashes`).
        """
        v, f = self.text(viewer), self.text(field_id)
        hex16 = self.concat(
            f"SUBSTR({self.md5_hex(v)}, 1, 8)",
            f"SUBSTR({self.md5_hex(self.key_text(v, f))}, 1, 8)",
        )
        return self.hex_to_int64(hex16)

    def value_hash(self, value: str) -> str:
        """SQL: the ``md5`` family's 64-bit fingerprint of ``value`` (first 16 hex digits of its MD5)."""
        return self.value_hash_of_md5(self.md5_hex(self.text(value)))

    def value_hash_of_md5(self, md5_hex: str) -> str:
        """SQL: the 64-bit fingerprint of a value whose MD5 hex digits are ``md5_hex``."""
        return self.hex_to_int64(f"SUBSTR({md5_hex}, 1, 16)")

    def uint32_of(self, int64_expr: str) -> str:
        """SQL: the high 32 bits of a signed 64-bit integer, unsigned (a key's viewer partition hash)."""
        # Every engine here shifts BIGINT arithmetically; the mask drops the sign's copies.
        return f"(({int64_expr} >> 32) & 4294967295)"

    # ---- tables and indexes --------------------------------------------------------------------
    def index_columns(self, columns: Sequence[tuple[str, str]]) -> str:
        """The column list of an index on ``(name, kind)`` pairs, within the engine's key limit."""
        return ", ".join(self.quote(name) for name, _ in columns)

    def create_index_sql(
        self, table: str, index: str, columns: Sequence[tuple[str, str]], *, unique: bool = False
    ) -> str:
        """``CREATE [UNIQUE] INDEX`` on ``table``; ``index`` is an unquoted name of word characters."""
        guard = "IF NOT EXISTS " if self.if_not_exists else ""
        kind = "UNIQUE INDEX" if unique else "INDEX"
        return f"CREATE {kind} {guard}{self.quote(index)} ON {table} ({self.index_columns(columns)})"

    def rename_table_sql(self, table: str, new_name: str) -> str:
        """Rename ``table`` (possibly schema-qualified) to ``new_name`` (unqualified, same schema)."""
        return f"ALTER TABLE {table} RENAME TO {self.quote(new_name)}"

    # ---- capabilities --------------------------------------------------------------------------
    def check_warehouse_diff(self, setting: str = "diff_in_warehouse") -> None:
        """Raise :class:`ConfigError` naming ``setting`` if the diff cannot run in this database."""
        if not self.can_diff:
            raise ConfigError(
                setting,
                f"the diff in the warehouse is not available on {self.name} (it needs MD5 and "
                "byte-exact text casts in SQL: PostgreSQL, MySQL/MariaDB and DuckDB have them); "
                "turn diff_in_warehouse off to diff in the connector",
            )

    def prepare_connection(self, conn: Any) -> None:
        """Make ``conn`` able to run this dialect's SQL (a no-op except on SQLite)."""

    def charset_problem(self, conn: Any) -> str | None:
        """Why ``conn`` would lose characters, if it would (MySQL: a charset other than utf8mb4)."""
        return None


def quote_with(name: str, identifier_format: str) -> str:
    """``name`` quoted with ``identifier_format`` (e.g. ``"{}"`` or ```{}```), closing char doubled."""
    close = identifier_format[-1] if identifier_format.endswith(('"', "`", "]")) else '"'
    return identifier_format.format(name.replace(close, close * 2))


@dataclass(frozen=True)
class PostgresDialect(Dialect):
    """PostgreSQL (and Redshift-like engines reached through psycopg)."""

    name: str = "postgresql"
    sqlglot: str | None = "postgres"
    types: Mapping[str, str] = field(
        default_factory=lambda: {TEXT: "TEXT", BIGINT: "BIGINT", TIMESTAMP: "TIMESTAMPTZ", DOUBLE: "DOUBLE PRECISION"}
    )
    if_not_exists: bool = True
    can_diff: bool = True

    def md5_hex(self, text_expr: str) -> str:
        return f"md5({text_expr})"

    def hex_to_uint32(self, hex8: str) -> str:
        return f"('x' || {hex8})::bit(32)::bigint"

    def hex_to_int64(self, hex16: str) -> str:
        return f"('x' || {hex16})::bit(64)::bigint"


@dataclass(frozen=True)
class MySQLDialect(Dialect):
    """MySQL, MariaDB and the engines speaking their protocol (StarRocks, Doris, TiDB...)."""

    name: str = "mysql"
    sqlglot: str | None = "mysql"
    identifier_format: str = "`{}`"
    types: Mapping[str, str] = field(
        default_factory=lambda: {TEXT: "TEXT", BIGINT: "BIGINT", TIMESTAMP: "DATETIME(6)", DOUBLE: "DOUBLE"}
    )
    if_not_exists: bool = True
    can_diff: bool = True
    max_key_bytes: int | None = MYSQL_MAX_KEY_BYTES
    clustered: bool = True

    def text(self, expr: str) -> str:
        # CONVERT ... USING utf8mb4: MD5 then hashes UTF-8 bytes even for a latin1 column, and
        # 4-byte characters survive (utf8/utf8mb3 cannot hold them).
        return f"CONVERT(CAST({expr} AS CHAR) USING utf8mb4)"

    def binary(self, expr: str) -> str:
        # Binary strings compare byte by byte: no case or accent folding, no PAD SPACE.
        return f"CAST({expr} AS BINARY)"

    def char_length(self, expr: str) -> str:
        return f"CHAR_LENGTH({expr})"

    def concat(self, *parts: str) -> str:
        # || is OR in MySQL unless PIPES_AS_CONCAT is set.
        return f"CONCAT({', '.join(parts)})"

    def literal(self, text: str) -> str:
        # Backslash escapes in MySQL strings unless NO_BACKSLASH_ESCAPES: double it too.
        return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"

    def hex_to_uint32(self, hex8: str) -> str:
        return f"CAST(CONV({hex8}, 16, 10) AS UNSIGNED)"

    def hex_to_int64(self, hex16: str) -> str:
        # Unsigned to signed is a documented two's-complement wrap, with no warning (which a
        # strict-mode INSERT ... SELECT would turn into an error).
        return f"CAST(CAST(CONV({hex16}, 16, 10) AS UNSIGNED) AS SIGNED)"

    def index_columns(self, columns: Sequence[tuple[str, str]]) -> str:
        # InnoDB refuses keys over 3072 bytes (error 1071) and TEXT without a prefix length:
        # text columns share what the fixed-size ones leave, 4 bytes per utf8mb4 character.
        # (8 bytes per other column and 2 length bytes per text column: a safe margin.)
        fixed = sum(8 for _, kind in columns if kind != TEXT)
        texts = sum(1 for _, kind in columns if kind == TEXT)
        prefix = (MYSQL_MAX_KEY_BYTES - fixed - 2 * texts) // _UTF8MB4_BYTES // max(texts, 1)
        return ", ".join(self.quote(n) + (f"({prefix})" if kind == TEXT else "") for n, kind in columns)

    def create_index_sql(
        self, table: str, index: str, columns: Sequence[tuple[str, str]], *, unique: bool = False
    ) -> str:
        # MariaDB knows CREATE INDEX IF NOT EXISTS, MySQL does not: leave the guard out.
        kind = "UNIQUE INDEX" if unique else "INDEX"
        return f"CREATE {kind} {self.quote(index)} ON {table} ({self.index_columns(columns)})"

    def rename_table_sql(self, table: str, new_name: str) -> str:
        schema = table.rsplit(".", 1)[0] + "." if "." in table else ""
        return f"RENAME TABLE {table} TO {schema}{self.quote(new_name)}"

    def charset_problem(self, conn: Any) -> str | None:
        # utf8 (utf8mb3) holds 3 bytes a character at most: a 4-byte one (an emoji, rare CJK)
        # silently becomes '?' on the way in or out.
        cur = conn.cursor()
        try:
            cur.execute("SELECT @@character_set_client, @@character_set_connection, @@character_set_results")
            row = cur.fetchone()
        finally:
            cur.close()
        names = [str(v.decode() if isinstance(v, bytes) else v) for v in (row or ())]
        wrong = sorted({n for n in names if not n.lower().startswith("utf8mb4")})
        if not wrong:
            return None
        return (
            f"the MySQL connection's character set is {', '.join(wrong)}, not utf8mb4: 4-byte characters "
            "(emoji, some CJK) would become '?'; set charset utf8mb4 in the connection's extras"
        )


@dataclass(frozen=True)
class DuckDBDialect(Dialect):
    """DuckDB (a file or in memory)."""

    name: str = "duckdb"
    sqlglot: str | None = "duckdb"
    types: Mapping[str, str] = field(
        default_factory=lambda: {TEXT: "VARCHAR", BIGINT: "BIGINT", TIMESTAMP: "TIMESTAMP", DOUBLE: "DOUBLE"}
    )
    if_not_exists: bool = True
    can_diff: bool = True

    def md5_hex(self, text_expr: str) -> str:
        return f"md5({text_expr})"

    def hex_to_uint32(self, hex8: str) -> str:
        # DuckDB reads a '0x...' string as a hexadecimal integer.
        return f"CAST('0x' || {hex8} AS BIGINT)"

    def hex_to_int64(self, hex16: str) -> str:
        # Through UBIGINT and HUGEINT, folded into the signed range (a plain cast would overflow).
        u = f"CAST(CAST('0x' || {hex16} AS UBIGINT) AS HUGEINT)"
        return f"CAST(CASE WHEN {u} >= 9223372036854775808 THEN {u} - 18446744073709551616 ELSE {u} END AS BIGINT)"


@dataclass(frozen=True)
class SQLiteDialect(Dialect):
    """SQLite: no MD5 of its own; connections this package opens get one (Python's hashlib).

    The diff cannot run in the warehouse here: the source's connections are not ours to extend.
    """

    name: str = "sqlite"
    sqlglot: str | None = "sqlite"
    types: Mapping[str, str] = field(
        default_factory=lambda: {TEXT: "TEXT", BIGINT: "INTEGER", TIMESTAMP: "TIMESTAMP", DOUBLE: "REAL"}
    )
    if_not_exists: bool = True

    def md5_hex(self, text_expr: str) -> str:
        return f"polyv_md5({text_expr})"

    def hex_to_uint32(self, hex8: str) -> str:
        return f"polyv_hex_int({hex8})"

    def prepare_connection(self, conn: Any) -> None:
        if hasattr(conn, "create_function"):
            conn.create_function("polyv_md5", 1, _sqlite_md5, deterministic=True)
            conn.create_function("polyv_hex_int", 1, _sqlite_hex_int, deterministic=True)


def _sqlite_md5(text: object) -> str | None:
    return None if text is None else _md5_hex_py(str(text))


def _sqlite_hex_int(text: object) -> int | None:
    return None if text is None else int(str(text), 16)


POSTGRESQL = PostgresDialect()
MYSQL = MySQLDialect()
DUCKDB = DuckDBDialect()
SQLITE = SQLiteDialect()
GENERIC = Dialect()

#: Other engines common-sql names: only their column types are known (the generic SQL otherwise).
_OTHER_TYPES: dict[str, dict[str, str]] = {
    "redshift": {TEXT: "VARCHAR(65535)", BIGINT: "BIGINT", TIMESTAMP: "TIMESTAMPTZ", DOUBLE: "DOUBLE PRECISION"},
    "mssql": {TEXT: "NVARCHAR(MAX)", BIGINT: "BIGINT", TIMESTAMP: "DATETIMEOFFSET", DOUBLE: "FLOAT"},
    "oracle": {
        TEXT: "VARCHAR2(4000)",
        BIGINT: "NUMBER(19)",
        TIMESTAMP: "TIMESTAMP WITH TIME ZONE",
        DOUBLE: "BINARY_DOUBLE",
    },
    "snowflake": {TEXT: "VARCHAR", BIGINT: "NUMBER(19,0)", TIMESTAMP: "TIMESTAMP_TZ", DOUBLE: "DOUBLE"},
    "bigquery": {TEXT: "STRING", BIGINT: "INT64", TIMESTAMP: "TIMESTAMP", DOUBLE: "FLOAT64"},
}
#: sqlglot's names where they differ from common-sql's.
_SQLGLOT_NAMES = {"mssql": "tsql", "sqlserver": "tsql"}
#: Engines whose CREATE TABLE takes IF NOT EXISTS, beyond the ones with a dialect class.
_IF_NOT_EXISTS = frozenset({"redshift", "snowflake", "bigquery", "databricks", "trino"})

#: Names (Airflow ``dialect_name``, connection types, sqlglot names) of the known dialects.
_BY_NAME: dict[str, Dialect] = {
    "postgresql": POSTGRESQL,
    "postgres": POSTGRESQL,
    "mysql": MYSQL,
    "mariadb": MYSQL,
    "duckdb": DUCKDB,
    "sqlite": SQLITE,
}

#: DB-API driver modules (the top-level module of the connection's class) and their dialect
#: names; the names without a dialect class still tell sqlglot how to parse a query.
_DRIVERS: dict[str, str] = {
    "psycopg": "postgresql",
    "psycopg2": "postgresql",
    "pg8000": "postgresql",
    "MySQLdb": "mysql",
    "pymysql": "mysql",
    "mysql": "mysql",  # mysql-connector-python
    "mariadb": "mysql",  # MariaDB Connector/Python
    "duckdb": "duckdb",
    "_duckdb": "duckdb",  # DuckDB 1.1+ defines its connection class in its _duckdb extension module
    "sqlite3": "sqlite",
    "pymssql": "mssql",
    "oracledb": "oracle",
    "cx_Oracle": "oracle",
    "snowflake": "snowflake",
    "trino": "trino",
    "redshift_connector": "redshift",
}
#: Driver modules of PostgreSQL's COPY fast path.
PG_DRIVERS = frozenset({"psycopg", "psycopg2"})


def dialect_named(name: str | None) -> Dialect:
    """The dialect of a name (``postgresql``, ``mysql``, ``mariadb``, ``duckdb``...); an unknown
    name gets the generic dialect under that name, with its column types where known."""
    key = (name or "").strip().lower()
    if key in _BY_NAME:
        return _BY_NAME[key]
    if not key or key == "default":
        return GENERIC
    return Dialect(
        name=key,
        sqlglot=_SQLGLOT_NAMES.get(key, key),
        types=_OTHER_TYPES.get(key, dict(GENERIC.types)),
        if_not_exists=key in _IF_NOT_EXISTS,
    )


def driver_of(conn: Any) -> str:
    """The top-level module of a DB-API connection's class (``psycopg2``, ``sqlite3``...).

    A driver whose connection class lives in its private extension module (DuckDB's
    ``_duckdb``) is named by its public package."""
    module = type(conn).__module__.split(".")[0]
    public = module.lstrip("_")
    return public if public != module and public in _DRIVERS else module


def placeholder_of(conn: Any) -> str | None:
    """The parameter marker of a connection's driver (its DB-API ``paramstyle``), if positional."""
    import sys

    style = getattr(sys.modules.get(driver_of(conn)), "paramstyle", None)
    return {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(str(style))


def driver_dialect_name(driver: str) -> str | None:
    """The dialect name of a DB-API driver module, when the driver says which database."""
    return _DRIVERS.get(driver)


def dialect_of_connection(conn: Any) -> Dialect:
    """The dialect of an open DB-API connection, from its driver (generic when unknown)."""
    return dialect_named(driver_dialect_name(driver_of(conn)))


def dialect_of(source: Any) -> Dialect:
    """The dialect of a name, an open DB-API connection, or a common-sql hook (its
    ``dialect_name``, else its connection type). A connection factory says nothing until it
    connects: generic."""
    if source is None or isinstance(source, str):
        return dialect_named(source)
    if isinstance(source, Dialect):
        return source
    if hasattr(source, "get_conn"):
        for attr in ("dialect_name", "conn_type"):
            try:
                value = getattr(source, attr, None)
            except Exception:  # some hooks compute these from a connection that may be odd
                value = None
            if isinstance(value, str) and (value.lower() in _BY_NAME or value.lower() in _OTHER_TYPES):
                return dialect_named(value)
        return GENERIC
    if hasattr(source, "cursor"):
        return dialect_of_connection(source)
    return GENERIC
