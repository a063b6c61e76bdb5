"""The SQL dialects: the text they write, and the same hashes as Python on the real engines."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from polyv_connector.errors import ConfigError
from polyv_connector.fingerprints import key_hashes, value_fingerprints, viewer_hashes
from polyv_connector.warehouse import dbapi, identifiers, readonly
from polyv_connector.warehouse.dialect import (
    DUCKDB,
    GENERIC,
    MYSQL,
    POSTGRESQL,
    SQLITE,
    TEXT,
    Dialect,
    dialect_named,
    dialect_of,
)
from tests.warehouse.support import PG_DSN, mysql_connect

# ASCII, a quote, a backslash, case twins, CJK, a 4-byte emoji and a musical symbol, empty.
SAMPLES = ["abc", "ABC", "it's", "back\\slash", "中文字段值", "😀 emoji 𝄞", "", "a "]


def test_identifiers_are_quoted_per_engine() -> None:
    assert MYSQL.quote("appId") == "`appId`"
    assert MYSQL.quote("we`ird") == "`we``ird`"
    assert POSTGRESQL.quote('we"ird') == '"we""ird"'
    assert DUCKDB.quote("key") == '"key"'
    # The old helper is a thin delegate of the dialect's rule.
    assert identifiers.quote_identifier("a`b", "`{}`") == MYSQL.quote("a`b")


def test_text_casts_and_binary_comparison_per_engine() -> None:
    assert POSTGRESQL.text("x") == "CAST(x AS TEXT)"
    assert DUCKDB.text("x") == "CAST(x AS TEXT)"
    assert MYSQL.text("x") == "CONVERT(CAST(x AS CHAR) USING utf8mb4)"
    assert MYSQL.binary_equal("a", "b") == "CAST(a AS BINARY) = CAST(b AS BINARY)"
    assert POSTGRESQL.binary_equal("a", "b") == "a = b"


def test_partition_hash_sql_per_engine() -> None:
    assert POSTGRESQL.partition_hash("v") == "('x' || SUBSTR(md5(CAST(v AS TEXT)), 1, 8))::bit(32)::bigint"
    assert MYSQL.partition_hash("v") == (
        "CAST(CONV(SUBSTR(MD5(CONVERT(CAST(v AS CHAR) USING utf8mb4)), 1, 8), 16, 10) AS UNSIGNED)"
    )
    assert "UBIGINT" not in DUCKDB.partition_hash("v") and "'0x'" in DUCKDB.partition_hash("v")


def test_mysql_indexes_fit_innodbs_key_limit() -> None:
    # Error 1071 came from indexing TEXT columns whole: every text column gets a prefix, and
    # the prefixes and fixed-size columns together stay within 3072 bytes.
    cols = MYSQL.index_columns([("appId", TEXT), ("viewerId", TEXT), ("key", "bigint")])
    assert cols == "`appId`(382), `viewerId`(382), `key`"
    assert 2 * 382 * 4 + 8 <= 3072
    assert MYSQL.create_index_sql("db.t", "t_idx", [("acct", "bigint"), ("key", "bigint")], unique=True) == (
        "CREATE UNIQUE INDEX `t_idx` ON db.t (`acct`, `key`)"
    )
    assert POSTGRESQL.create_index_sql("s.t", "t_idx", [("key", "bigint")]) == (
        'CREATE INDEX IF NOT EXISTS "t_idx" ON s.t ("key")'
    )
    assert MYSQL.rename_table_sql("db.t", "t_old") == "RENAME TABLE db.t TO db.`t_old`"
    assert POSTGRESQL.rename_table_sql("s.t", "t_old") == 'ALTER TABLE s.t RENAME TO "t_old"'


@pytest.mark.mariadb
def test_a_text_index_mariadb_accepts(mysql_db: str) -> None:
    conn = mysql_connect(mysql_db)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE t (`appId` TEXT, `viewerId` TEXT, `key` BIGINT) CHARACTER SET utf8mb4")
            columns = [("appId", TEXT), ("viewerId", TEXT), ("key", "bigint")]
            cur.execute(MYSQL.create_index_sql("t", "t_idx", columns))  # no error 1071
            cur.execute("SHOW INDEX FROM t")
            assert len(cur.fetchall()) == 3
    finally:
        conn.close()


@pytest.mark.parametrize("dialect", [GENERIC, SQLITE, dialect_named("snowflake")])
def test_engines_without_the_warehouse_diff_say_so_naming_the_setting(dialect: Dialect) -> None:
    with pytest.raises(ConfigError) as err:
        dialect.check_warehouse_diff()
    assert err.value.setting == "diff_in_warehouse"
    assert dialect.name in str(err.value)


@pytest.mark.parametrize("dialect", [POSTGRESQL, MYSQL, DUCKDB])
def test_engines_with_the_warehouse_diff_pass_the_check(dialect: Dialect) -> None:
    dialect.check_warehouse_diff()


def test_detection_from_names_drivers_and_hooks() -> None:
    assert dialect_named("postgresql") is POSTGRESQL
    assert dialect_named("MariaDB") is MYSQL
    assert dialect_named("default") is GENERIC
    assert dialect_named("mssql").sqlglot == "tsql"
    assert dialect_named("mssql").column_type(TEXT) == "NVARCHAR(MAX)"
    assert dialect_of(sqlite3.connect(":memory:")) is SQLITE

    class MySqlHook:
        dialect_name = "mysql"

        def get_conn(self) -> Any:
            raise AssertionError("detection must not connect")

    class DuckDBHook:
        dialect_name = "default"
        conn_type = "duckdb"

        def get_conn(self) -> Any:
            raise AssertionError("detection must not connect")

    assert dialect_of(MySqlHook()) is MYSQL
    assert dialect_of(DuckDBHook()) is DUCKDB
    assert dialect_of(lambda: None) is GENERIC
    # The older entry points answer from the same table.
    assert readonly.sqlglot_dialect("mariadb") == "mysql"
    assert readonly.dialect_of_driver(sqlite3.connect(":memory:")) == "sqlite"
    assert dbapi.driver_of(sqlite3.connect(":memory:")) == "sqlite3"


# ---- the same hashes as Python, computed by each engine ----------------------------------------
def _python_hashes(texts: list[str]) -> dict[str, list[int]]:
    arr = pa.array(texts)
    fields = pa.array(["F_" + t for t in texts])
    key, _ = key_hashes(arr, fields, "md5")
    return {
        "md5": [int(hashlib.md5(t.encode()).hexdigest(), 16) for t in texts],
        "partition": [int(x) for x in viewer_hashes(arr)],
        "key": [int(x) for x in key.view(np.int64)],
        "value": [int(x) for x in value_fingerprints(arr, "md5").view(np.int64)],
    }


def _engine_hashes(dialect: Dialect, run: Callable[[str], Any], texts: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {"md5": [], "partition": [], "key": [], "value": []}
    for t in texts:
        lit = dialect.literal(t)
        field = dialect.literal("F_" + t)
        row = run(
            f"SELECT {dialect.md5_hex(dialect.text(lit))}, {dialect.partition_hash(lit)}, "
            f"{dialect.key_hash(lit, field)}, {dialect.value_hash(lit)}"
        )
        out["md5"].append(int(row[0], 16))
        out["partition"].append(int(row[1]))
        out["key"].append(int(row[2]))
        # Python keeps fingerprint 0 for "unconfirmed"; no sample hashes to it.
        out["value"].append(int(row[3]))
    return out


@pytest.fixture
def pg_run(pg_available: bool) -> Iterator[Callable[[str], Any]]:
    import psycopg

    conn = psycopg.connect(PG_DSN, connect_timeout=3)
    with conn:
        yield lambda sql: conn.execute(sql).fetchone()


@pytest.mark.postgres
def test_postgres_computes_the_python_hashes(pg_run: Callable[[str], Any]) -> None:
    assert _engine_hashes(POSTGRESQL, pg_run, SAMPLES) == _python_hashes(SAMPLES)
    assert pg_run("SELECT " + POSTGRESQL.binary_equal("'abc'", "'ABC'"))[0] is False


@pytest.mark.mariadb
def test_mariadb_computes_the_python_hashes_and_compares_bytes(mariadb_available: bool) -> None:
    conn = mysql_connect()
    try:
        with conn.cursor() as cur:

            def run(sql: str) -> Any:
                cur.execute(sql)
                return cur.fetchone()

            assert _engine_hashes(MYSQL, run, SAMPLES) == _python_hashes(SAMPLES)
            # The default collation folds case and ignores trailing spaces; the dialect's does not.
            assert run("SELECT 'abc' = 'ABC', 'a' = 'a '") == (1, 1)
            differ = MYSQL.binary_equal("'abc'", "'ABC'") + ", " + MYSQL.binary_equal("'a'", "'a '")
            assert run("SELECT " + differ) == (0, 0)
            assert run("SELECT " + MYSQL.binary_equal("'abc'", "'abc'")) == (1,)
    finally:
        conn.close()


def test_duckdb_computes_the_python_hashes() -> None:
    import duckdb

    conn = duckdb.connect()
    try:
        assert _engine_hashes(DUCKDB, lambda sql: conn.execute(sql).fetchone(), SAMPLES) == _python_hashes(SAMPLES)
        # A value whose digest starts with a high bit set still fits BIGINT (two's complement).
        assert any(v < 0 for v in _python_hashes(SAMPLES)["key"])
    finally:
        conn.close()


def test_sqlite_connections_we_open_compute_the_python_hashes() -> None:
    conn = sqlite3.connect(":memory:")
    SQLITE.prepare_connection(conn)
    assert _engine_hashes(SQLITE, lambda sql: conn.execute(sql).fetchone(), SAMPLES) == _python_hashes(SAMPLES)


@pytest.mark.mariadb
def test_a_mysql_connection_without_utf8mb4_is_named(mariadb_available: bool) -> None:
    import pymysql

    from tests.warehouse.support import MYSQL_HOST, MYSQL_PORT

    good = mysql_connect()
    bad = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", charset="utf8")
    try:
        assert MYSQL.charset_problem(good) is None
        problem = MYSQL.charset_problem(bad)
        assert problem is not None and "utf8mb3" in problem and "utf8mb4" in problem
        assert POSTGRESQL.charset_problem(good) is None  # only MySQL has the problem
    finally:
        good.close()
        bad.close()
