"""``check_read_query`` per dialect, without a database: the lexing rules that decide where a
statement ends differ between databases, so the check runs in the connection's own dialect."""

from __future__ import annotations

import pytest

from polyv_connector.errors import ConfigError
from polyv_connector.warehouse.readonly import check_read_query, sqlglot_dialect

OK, NO = True, False

CASES = [
    # (dialect, sql, accepted)
    ("postgres", "SELECT a FROM t WHERE a = %s AND b = %(name)s AND c LIKE 'x%'", OK),  # psycopg markers
    ("mysql", "SELECT a FROM t WHERE a = %s", OK),
    ("snowflake", "SELECT a FROM t WHERE a = %(x)s", OK),
    ("sqlite", "SELECT a FROM t WHERE a = ? AND b = :name", OK),
    ("tsql", "SELECT TOP 5 a FROM t", OK),
    ("mysql", "SELECT a FROM t WHERE a = %s; DROP TABLE t", NO),
    # A backslash escapes a quote in MySQL (one string) but not in PostgreSQL (two statements).
    ("mysql", "SELECT 'a\\'; DROP TABLE t; --' AS x", OK),
    ("postgres", "SELECT 'a\\'; DROP TABLE t; --' AS x", NO),
    ("postgres", "SELECT E'a\\'; DROP TABLE t; --' AS x", OK),
    ("postgres", "SELECT E'\\\\'; DROP TABLE t; --' AS x", NO),
    ("postgres", "SELECT U&'\\0027'; DROP TABLE t; --' AS x", NO),
    # With no known dialect, a text must be one query in the generic, PostgreSQL and MySQL
    # dialects alike: the backslash case is two statements in PostgreSQL, so it is refused.
    (None, "SELECT 'a\\'; DROP TABLE t; --' AS x", NO),
    (None, "SELECT a FROM t WHERE a = %(x)s", OK),
]


@pytest.mark.parametrize(("dialect", "sql", "accepted"), CASES)
def test_check_read_query_per_dialect(dialect: str | None, sql: str, accepted: bool) -> None:
    if accepted:
        assert check_read_query(sql, dialect) == sql
    else:
        with pytest.raises(ConfigError) as raised:
            check_read_query(sql, dialect)
        assert raised.value.setting == "source_sql"


def test_trailing_semicolons_and_comments_are_cut_for_the_subquery() -> None:
    assert check_read_query("SELECT 1 ; -- done\n ;", "postgres") == "SELECT 1"
    assert check_read_query("SELECT 1 -- a note", "postgres") == "SELECT 1"


def test_airflow_dialect_names() -> None:
    assert sqlglot_dialect("postgresql") == "postgres"
    assert sqlglot_dialect("mssql") == "tsql"
    assert sqlglot_dialect("snowflake") == "snowflake"
    assert sqlglot_dialect("default") is None and sqlglot_dialect("no-such-db") is None
