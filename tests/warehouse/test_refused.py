"""The functions a source query may not call, per dialect, without a database (the corpus in
tests/hostile/test_sql_corpus.py runs the same refusals against the real engines)."""

from __future__ import annotations

import pytest

from polyv_connector.errors import ConfigError
from polyv_connector.warehouse.readonly import check_read_query
from polyv_connector.warehouse.refused import DUCKDB_REFUSED, MYSQL_REFUSED, POSTGRES_REFUSED, refused_in

REFUSED = [
    # (dialect, sql, what the message names)
    ("postgres", "SELECT pg_read_file('/etc/passwd')", "pg_read_file()"),
    ("postgres", "SELECT pg_read_binary_file('/etc/passwd')", "pg_read_binary_file()"),
    ("postgres", "SELECT * FROM pg_ls_dir('.') AS d", "pg_ls_dir()"),
    ("postgres", "SELECT * FROM pg_ls_waldir()", "pg_ls_waldir()"),
    ("postgres", "SELECT (pg_stat_file('postgresql.conf')).size", "pg_stat_file()"),
    ("postgres", "SELECT lo_import('/etc/passwd')", "lo_import()"),
    ("postgres", "SELECT lo_export(1, '/tmp/x')", "lo_export()"),
    ("postgres", "SELECT * FROM dblink('dbname=test', 'SELECT 1') AS t(a int)", "dblink()"),
    ("postgres", "SELECT dblink_exec('dbname=test', 'DELETE FROM t')", "dblink_exec()"),
    ("postgres", "SELECT pg_terminate_backend(1)", "pg_terminate_backend()"),
    ("postgres", "SELECT pg_cancel_backend(1)", "pg_cancel_backend()"),
    ("postgres", "SELECT pg_advisory_lock(1)", "pg_advisory_lock()"),
    ("postgres", "SELECT pg_try_advisory_xact_lock(1)", "pg_try_advisory_xact_lock()"),
    ("postgres", "SELECT pg_sleep(1)", "pg_sleep()"),
    ("postgres", "SELECT pg_sleep_for('1 second')", "pg_sleep_for()"),
    ("postgres", "SELECT pg_notify('c', 'x')", "pg_notify()"),
    ("postgres", "SELECT set_config('transaction_read_only', 'off', true)", "set_config()"),
    ("postgres", "SELECT query_to_xml('DELETE FROM t RETURNING 1', true, true, '')", "query_to_xml()"),
    ("postgres", "SELECT query_to_xml_and_xmlschema('SELECT 1', true, true, '')", "query_to_xml_and_xmlschema()"),
    # known bypasses: schema-qualified, quoted, mixed case, a function in a subquery or a CTE
    ("postgres", "SELECT pg_catalog.pg_read_file('/etc/passwd')", "pg_read_file()"),
    ("postgres", "SELECT pg_catalog.\"pg_read_file\"('/etc/passwd')", "pg_read_file()"),
    ("postgres", "SELECT PG_Read_File('/etc/passwd')", "pg_read_file()"),
    ("postgres", "WITH x AS (SELECT pg_sleep(5) AS s) SELECT * FROM x", "pg_sleep()"),
    ("postgres", "SELECT a FROM t WHERE a IN (SELECT pg_ls_dir('.'))", "pg_ls_dir()"),
    ("postgres", "SELECT * FROM ROWS FROM (pg_ls_dir('.')) AS d", "pg_ls_dir()"),
    # U&"..." spells any name with escapes: a function name must be a plain identifier
    ("postgres", "SELECT U&\"pg\\0072ead_file\"('/etc/passwd')", "not a plain identifier"),
    ("mysql", "SELECT LOAD_FILE('/etc/passwd')", "load_file()"),
    ("mysql", "SELECT SLEEP(5)", "sleep()"),
    ("mysql", "SELECT `sleep`(5)", "sleep()"),
    ("mysql", "SELECT BENCHMARK(1000000, MD5('a'))", "benchmark()"),
    ("mysql", "SELECT GET_LOCK('x', 1)", "get_lock()"),
    ("mysql", "SELECT RELEASE_LOCK('x')", "release_lock()"),
    ("mysql", "SELECT IS_FREE_LOCK('x')", "is_free_lock()"),
    ("mysql", "SELECT @v := 1", "user variable assignment"),
    ("mysql", "SELECT a FROM t WHERE (@x := a) > 0", "user variable assignment"),
    ("mysql", "SELECT a FROM t INTO OUTFILE '/tmp/x'", "INTO OUTFILE"),
    ("mysql", "SELECT a FROM t INTO DUMPFILE '/tmp/x'", "INTO DUMPFILE"),
    ("mysql", "SELECT a /*! INTO OUTFILE '/tmp/x' */", "executable comment"),
    ("mysql", "SELECT a /*!50000 INTO OUTFILE '/tmp/x' */", "executable comment"),
    ("mysql", "SELECT a /*M!100000 INTO OUTFILE '/tmp/x' */ FROM t", "executable comment"),
    ("mysql", "SELECT a FROM t /*!, LOAD_FILE('/etc/passwd') */", "executable comment"),
    ("duckdb", "SELECT * FROM read_text('/proc/self/environ')", "read_text()"),
    ("duckdb", "SELECT * FROM read_csv('/etc/passwd')", "read_csv()"),
    ("duckdb", "SELECT * FROM read_csv_auto('/etc/passwd')", "read_csv_auto()"),
    ("duckdb", "SELECT * FROM read_parquet(['s3://b/x.parquet'])", "read_parquet()"),
    ("duckdb", "SELECT * FROM glob('/some/dir/*')", "glob()"),
    ("duckdb", "SELECT * FROM query('SELECT * FROM read_text(''/etc/passwd'')')", "query()"),
    ("duckdb", "SELECT * FROM query_table('t')", "query_table()"),
    ("duckdb", "SELECT * FROM parquet_scan('x.parquet')", "parquet_scan()"),
    ("duckdb", "SELECT * FROM postgres_scan('dbname=test', 'public', 't')", "postgres_scan()"),
    ("duckdb", "SELECT * FROM sqlite_scan('x.db', 't')", "sqlite_scan()"),
    ("duckdb", "SELECT * FROM mysql_query('db', 'SELECT 1')", "mysql_query()"),
    ("duckdb", "SELECT * FROM iceberg_scan('s3://b/t')", "iceberg_scan()"),
    ("duckdb", "SELECT * FROM delta_scan('s3://b/t')", "delta_scan()"),
    ("duckdb", "SELECT nextval('s')", "nextval()"),
    ("duckdb", "SELECT * FROM duckdb_secrets()", "duckdb_secrets()"),
    ("duckdb", "SELECT * FROM Main.Read_Text('/etc/passwd')", "read_text()"),
    ("duckdb", "SELECT * FROM '/etc/passwd'", "a file or URL as a table"),
    ("duckdb", "FROM '/path/file.csv'", "a file or URL as a table"),
    ("duckdb", 'SELECT * FROM "data.csv"', "a file or URL as a table"),
    ("duckdb", "SELECT * FROM 'https://example.com/x.csv'", "a file or URL as a table"),
    ("duckdb", "SELECT * FROM t, LATERAL (SELECT * FROM read_text(t.p))", "read_text()"),
    # with no known dialect, every list applies (the text must pass as PostgreSQL and MySQL)
    (None, "SELECT pg_read_file('/etc/passwd')", "pg_read_file()"),
    (None, "SELECT LOAD_FILE('/etc/passwd')", "load_file()"),
    (None, "SELECT a /*! INTO OUTFILE '/tmp/x' */", "executable comment"),
]

ACCEPTED = [
    ("postgres", "SELECT md5(a), count(*) OVER (PARTITION BY b), coalesce(c, '') FROM s.t"),
    ("postgres", "SELECT CAST(a AS TEXT), now(), current_setting('TimeZone') FROM t"),
    ("postgres", "SELECT lower(a), substr(b, 1, 8), pg_typeof(c)::text FROM t"),
    ("postgres", "SELECT 'pg_read_file(''/etc/passwd'')' AS just_text FROM t"),
    ("postgres", "SELECT a /* pg_sleep(1) in a comment */ FROM t"),
    ("mysql", "SELECT CONV(SUBSTR(MD5(a), 1, 8), 16, 10), CHAR_LENGTH(b) FROM db.t WHERE c = %s"),
    ("mysql", "SELECT a /* a plain comment */ FROM t"),
    ("mysql", "SELECT a FROM t WHERE b = @v"),
    ("duckdb", "SELECT md5(a), CAST('0x' || b AS BIGINT) FROM main.t"),
    ("duckdb", "SELECT * FROM t"),
    ("duckdb", 'SELECT * FROM "Viewer Attributes"'),
    ("duckdb", "SELECT * FROM range(10)"),
]


@pytest.mark.parametrize(("dialect", "sql", "names"), REFUSED, ids=[f"{d}:{s}" for d, s, _ in REFUSED])
def test_functions_that_reach_outside_the_data_are_refused(dialect: str | None, sql: str, names: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_read_query(sql, dialect)
    assert raised.value.setting == "source_sql"
    assert names in str(raised.value)
    assert "stays in the database" in str(raised.value)


@pytest.mark.parametrize(("dialect", "sql"), ACCEPTED, ids=[f"{d}:{s}" for d, s in ACCEPTED])
def test_ordinary_queries_pass(dialect: str, sql: str) -> None:
    assert check_read_query(sql, dialect) == sql


def test_the_lists_hold_what_the_issue_names() -> None:
    postgres = {
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_*",
        "pg_stat_file",
        "lo_*",
        "dblink*",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_advisory*",
        "pg_sleep*",
        "pg_notify",
        "set_config",
        "query_to_xml*",
    }
    mysql = {"load_file", "sleep", "benchmark", "get_lock", "release_lock", "is_free_lock"}
    duckdb = {"read_*", "glob", "query", "query_table", "parquet_*", "postgres_*", "sqlite_*", "iceberg_*", "delta_*"}
    assert postgres <= set(POSTGRES_REFUSED)
    assert mysql <= set(MYSQL_REFUSED)
    assert duckdb <= set(DUCKDB_REFUSED)
    assert refused_in("postgres") == POSTGRES_REFUSED and refused_in("sqlite") == ()


def test_a_query_nested_too_deeply_is_refused_not_a_crash() -> None:
    sql = "SELECT " + "upper(" * 3000 + "a" + ")" * 3000 + " FROM t"
    with pytest.raises(ConfigError, match="nests too deeply"):
        check_read_query(sql, "postgres")
