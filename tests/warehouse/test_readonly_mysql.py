"""MySQL/MariaDB sources are read in a read-only session (issue 13): a write the parser cannot
see (a stored function that deletes) is refused by the server, through the streaming cursor."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from polyv_connector.config import ColumnMapping
from polyv_connector.errors import InputError
from polyv_connector.sources.sql import SqlSource, mysql_streaming_cursor
from polyv_connector.warehouse import readonly
from tests.warehouse.support import MYSQL_HOST, MYSQL_PORT, mysql_connect

pytestmark = pytest.mark.mariadb

ROWS = [("v1", "f1", "张三"), ("v2", "f1", "emoji-😀"), ("v3", "f2", None)]


def _mysqlclient(database: str) -> Any:
    import MySQLdb

    return MySQLdb.connect(
        host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", database=database, charset="utf8mb4"
    )


def _pymysql(database: str) -> Any:
    return mysql_connect(database)


DRIVERS = pytest.mark.parametrize("connect", [_pymysql, _mysqlclient], ids=["pymysql", "mysqlclient"])


@pytest.fixture
def db(mariadb_available: bool) -> Iterator[str]:
    """A throwaway database of this file's own (``polyv_adbc_*``) with a table and a function that writes."""
    name = f"polyv_adbc_{uuid.uuid4().hex[:10]}"
    conn = mysql_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
            cur.execute(f"USE {name}")
            cur.execute(
                "CREATE TABLE attrs (viewerId VARCHAR(64), customFieldId VARCHAR(64), customFieldValue VARCHAR(64))"
                " CHARACTER SET utf8mb4"
            )
            cur.executemany("INSERT INTO attrs VALUES (%s, %s, %s)", ROWS)
            cur.execute(
                "CREATE FUNCTION wipe() RETURNS VARCHAR(8) MODIFIES SQL DATA BEGIN DELETE FROM attrs; RETURN 'x'; END"
            )
        conn.commit()
    finally:
        conn.close()
    try:
        yield name
    finally:
        conn = mysql_connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {name}")
        finally:
            conn.close()


def _count(db: str) -> int:
    conn = mysql_connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM attrs")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


@DRIVERS
def test_begin_read_only_makes_the_mysql_session_refuse_writes(db: str, connect: Callable[[str], Any]) -> None:
    conn = connect(db)
    try:
        assert readonly.begin_read_only(conn, "source_sql") is True
        # A write through the same connection, by the plain and by the streaming cursor:
        for cur in (conn.cursor(), mysql_streaming_cursor(conn)):
            with pytest.raises(Exception, match="READ ONLY transaction") as caught:
                cur.execute("INSERT INTO attrs VALUES ('v9', 'f9', 'x')")
            assert readonly.is_read_only_violation(caught.value), caught.value
            cur.close()
        conn.commit()
        # Autocommit does not escape it: the setting is the session's, not one transaction's.
        conn.autocommit(True)  # a method in both mysqlclient and PyMySQL
        with pytest.raises(Exception, match="READ ONLY transaction") as caught:
            conn.cursor().execute("DELETE FROM attrs")
        assert readonly.is_read_only_violation(caught.value), caught.value
    finally:
        conn.close()
    assert _count(db) == len(ROWS)


@DRIVERS
def test_mysql_source_that_writes_is_refused(db: str, connect: Callable[[str], Any]) -> None:
    mapping = ColumnMapping("viewerId", "customFieldId", "customFieldValue")
    # sqlglot sees a function call; only the server knows wipe() deletes.
    source = SqlSource(lambda: connect(db), sql="SELECT viewerId, customFieldId, wipe() AS customFieldValue FROM attrs")
    with pytest.raises(InputError, match=r"source_sql: the source query tried to write.*read-only transaction"):
        source.check_columns(mapping)  # the column probe already runs the query: refused there
    with pytest.raises(InputError, match=r"source_sql: the source query tried to write.*read-only transaction"):
        list(source.batches(mapping.source_columns, 2))
    assert _count(db) == len(ROWS)
    # A reading query still streams (SSCursor, batches of 2), inside the same guard.
    source = SqlSource(
        lambda: connect(db),
        sql="SELECT viewerId, customFieldId, CONCAT(COALESCE(customFieldValue, ''), '/', @@session.tx_read_only) "
        "AS customFieldValue FROM attrs ORDER BY viewerId",
    )
    source.check_columns(mapping)
    batches = list(source.batches(mapping.source_columns, 2))
    assert [b.num_rows for b in batches] == [2, 1]
    values = [v for b in batches for v in b.column(2).to_pylist()]
    assert values == ["张三/ON", "emoji-😀/ON", "/ON"]


def test_mysql_read_only_error_is_recognised_by_its_code() -> None:
    # mysqlclient and PyMySQL put the server's code first in args; mysql-connector has errno.
    assert readonly.is_read_only_violation(Exception(1792, "Cannot execute statement in a READ ONLY transaction"))
    assert not readonly.is_read_only_violation(Exception(1146, "Table doesn't exist"))
    err = Exception("x")
    err.errno = 1792  # type: ignore[attr-defined]
    assert readonly.is_read_only_violation(err)
