"""Every database error is classified: configuration (exit 2) or temporary (exit 75).

Each case provokes the real error on the real server (MariaDB through mysqlclient, PostgreSQL
through psycopg 3), then checks :func:`classify` and that the message carries the database's
own words; a few go through the library's own paths (a source, a report table) to the exit code.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from polyv_connector import exit_codes
from polyv_connector.errors import ConfigError, DependencyUnavailable, InputError
from polyv_connector.sources.sql import SqlSource
from polyv_connector.warehouse.db_errors import classify, database_error, describe
from polyv_connector.warehouse.report_table import SqlReportTable
from tests.stack import free_port
from tests.warehouse.engines import mysql_connect
from tests.warehouse.support import MYSQL_HOST, MYSQL_PORT, PG_DSN


def _raised(action: Callable[[], Any]) -> BaseException:
    try:
        action()
    except Exception as exc:
        return exc
    raise AssertionError("no error raised")


def _check(exc: BaseException, kind: str, words: str) -> None:
    assert classify(exc) == kind, describe(exc)
    text = describe(exc)
    assert words.lower() in text.lower(), text
    error = database_error(exc, "source_conn_id", "cannot read")
    expected = DependencyUnavailable if kind == "temporary" else ConfigError
    assert isinstance(error, expected) and words.lower() in str(error).lower()
    assert exit_codes.for_error(error).code == (75 if kind == "temporary" else 2)


# ---- MariaDB -----------------------------------------------------------------------------------
@pytest.fixture
def mysql_user(mariadb_database: str) -> Iterator[tuple[str, str, str]]:
    """A user with password 'right', no grants, at most 1 connection; and a table ``t``."""
    user = f"polyv_e_{uuid.uuid4().hex[:8]}"
    admin = mysql_connect(mariadb_database)
    cur = admin.cursor()
    cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right' WITH MAX_USER_CONNECTIONS 1")
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
    cur.execute("INSERT INTO t VALUES (1, 0), (2, 0)")
    admin.commit()
    try:
        yield user, "right", mariadb_database
    finally:
        cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()


def _as(user: str, password: str, db: str | None = None) -> Any:
    import MySQLdb

    kwargs: dict[str, Any] = {"host": MYSQL_HOST, "port": MYSQL_PORT, "user": user, "passwd": password}
    if db:
        kwargs["db"] = db
    return MySQLdb.connect(**kwargs)


@pytest.mark.mariadb
def test_mariadb_configuration_errors(mysql_user: tuple[str, str, str]) -> None:
    user, password, db = mysql_user
    _check(_raised(lambda: _as(user, "wrong")), "config", "access denied")
    _check(_raised(lambda: mysql_connect("polyv_no_such_db_x")), "config", "unknown database")
    admin = mysql_connect(db)
    try:
        _check(_raised(lambda: admin.cursor().execute("SELECT * FROM no_such_table")), "config", "doesn't exist")
        _check(_raised(lambda: admin.cursor().execute("SELEC 1")), "config", "syntax")
    finally:
        admin.close()
    conn = _as(user, password)
    try:
        _check(_raised(lambda: conn.cursor().execute(f"SELECT * FROM {db}.t")), "config", "denied")
    finally:
        conn.close()


@pytest.mark.mariadb
def test_mariadb_temporary_errors(mysql_user: tuple[str, str, str]) -> None:
    user, password, db = mysql_user
    import MySQLdb

    port = free_port()
    _check(_raised(lambda: MySQLdb.connect(host="127.0.0.1", port=port, user="root")), "temporary", "can't connect")
    # Too many connections (the user's limit is 1).
    first = _as(user, password)
    try:
        _check(_raised(lambda: _as(user, password)), "temporary", "max_user_connections")
    finally:
        first.close()
    # A lock wait timeout, then a deadlock.
    a, b = mysql_connect(db), mysql_connect(db)
    try:
        a.cursor().execute("UPDATE t SET v = 1 WHERE id = 1")
        cur_b = b.cursor()
        cur_b.execute("SET SESSION innodb_lock_wait_timeout = 1")
        _check(_raised(lambda: cur_b.execute("UPDATE t SET v = 2 WHERE id = 1")), "temporary", "lock wait timeout")
        b.rollback()
        cur_b.execute("UPDATE t SET v = 2 WHERE id = 2")
        errors: list[BaseException] = []

        def a_takes_2() -> None:
            try:
                a.cursor().execute("UPDATE t SET v = 3 WHERE id = 2")
            except Exception as exc:
                errors.append(exc)

        waiter = threading.Thread(target=a_takes_2)
        waiter.start()
        import time

        time.sleep(0.5)  # a now waits for b's row 2
        try:
            cur_b.execute("UPDATE t SET v = 4 WHERE id = 1")
        except Exception as exc:
            errors.append(exc)
        b.rollback()
        waiter.join(10)
        a.rollback()
        assert errors, "no deadlock"
        _check(errors[0], "temporary", "deadlock")
    finally:
        a.close()
        b.close()
    # A connection the server killed.
    victim, admin = mysql_connect(db), mysql_connect(db)
    try:
        cur = victim.cursor()
        cur.execute("SELECT CONNECTION_ID()")
        admin.cursor().execute(f"KILL {cur.fetchone()[0]}")
        _check(_raised(lambda: victim.cursor().execute("SELECT 1")), "temporary", "")
    finally:
        admin.close()


@pytest.mark.mariadb
def test_mariadb_library_paths_exit_codes(mysql_user: tuple[str, str, str]) -> None:
    user, password, db = mysql_user
    import MySQLdb

    refused = SqlSource(lambda: MySQLdb.connect(host="127.0.0.1", port=free_port(), user="root"), table="t")
    error = _raised(refused.columns)
    assert isinstance(error, DependencyUnavailable) and "Can't connect" in str(error)
    assert exit_codes.for_error(error).code == 75
    denied = SqlSource(lambda: _as(user, "wrong", db), table="t", dialect="mysql")
    error = _raised(denied.columns)
    assert isinstance(error, InputError) and "Access denied" in str(error)
    assert exit_codes.for_error(error).code == 2
    report = _raised(lambda: SqlReportTable(lambda: _as(user, password, db), "polyv_sync_report", dialect="mysql"))
    assert isinstance(report, ConfigError) and "denied" in str(report).lower()


# ---- PostgreSQL --------------------------------------------------------------------------------
@pytest.fixture
def pg_role(pg_schema: str) -> Iterator[str]:
    """A login role with no grants and a connection limit of 1; a table ``t`` in pg_schema."""
    import psycopg

    role = f"polyv_e_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
        admin.execute(f"CREATE TABLE {pg_schema}.t (id INT PRIMARY KEY, v INT)")
        admin.execute(f"INSERT INTO {pg_schema}.t VALUES (1, 0), (2, 0)")
    try:
        yield role
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def _pg(**overrides: Any) -> Any:
    import psycopg

    return psycopg.connect(PG_DSN, **overrides)


@pytest.mark.postgres
def test_postgres_configuration_errors(pg_schema: str, pg_role: str) -> None:
    _check(_raised(lambda: _pg(user="polyv_no_such_role")), "config", "does not exist")
    _check(_raised(lambda: _pg(dbname="polyv_no_such_db")), "config", "does not exist")
    with _pg() as conn:
        _check(_raised(lambda: conn.execute("SELECT * FROM no_such_table")), "config", "does not exist")
        conn.rollback()
        _check(_raised(lambda: conn.execute("SELEC 1")), "config", "syntax")
    with _pg(user=pg_role) as conn:
        _check(_raised(lambda: conn.execute(f"SELECT * FROM {pg_schema}.t")), "config", "permission denied")


@pytest.mark.postgres
def test_postgres_temporary_errors(pg_schema: str, pg_role: str) -> None:
    _check(_raised(lambda: _pg(port=free_port())), "temporary", "")
    with _pg(user=pg_role):
        _check(_raised(lambda: _pg(user=pg_role)), "temporary", "too many connections")
    a, b = _pg(), _pg()
    try:
        a.execute(f"UPDATE {pg_schema}.t SET v = 1 WHERE id = 1")
        b.execute("SET lock_timeout = '200ms'")
        _check(_raised(lambda: b.execute(f"UPDATE {pg_schema}.t SET v = 2 WHERE id = 1")), "temporary", "lock")
        b.rollback()
        b.execute(f"UPDATE {pg_schema}.t SET v = 2 WHERE id = 2")
        errors: list[BaseException] = []

        def a_takes_2() -> None:
            try:
                a.execute(f"UPDATE {pg_schema}.t SET v = 3 WHERE id = 2")
            except Exception as exc:
                errors.append(exc)

        waiter = threading.Thread(target=a_takes_2)
        waiter.start()
        import time

        time.sleep(0.5)
        try:
            b.execute(f"UPDATE {pg_schema}.t SET v = 4 WHERE id = 1")
        except Exception as exc:
            errors.append(exc)
        b.rollback()
        waiter.join(10)
        a.rollback()
        assert errors, "no deadlock"
        _check(errors[0], "temporary", "deadlock")
    finally:
        a.close()
        b.close()
    with _pg() as victim, _pg(autocommit=True) as admin:
        pid = victim.execute("SELECT pg_backend_pid()").fetchone()[0]
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        _check(_raised(lambda: victim.execute("SELECT 1")), "temporary", "terminat")


@pytest.mark.postgres
def test_postgres_library_paths_exit_codes(pg_schema: str) -> None:
    refused = SqlSource(lambda: _pg(port=free_port()), table="t")
    error = _raised(refused.columns)
    assert isinstance(error, DependencyUnavailable) and exit_codes.for_error(error).code == 75
    missing = SqlSource(lambda: _pg(), table=f"{pg_schema}.no_such_table")
    error = _raised(missing.columns)
    assert isinstance(error, InputError) and "does not exist" in str(error)
    assert exit_codes.for_error(error).code == 2


def test_duckdb_errors(tmp_path) -> None:
    import duckdb

    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    _check(_raised(lambda: conn.execute("SELECT * FROM no_such_table")), "config", "does not exist")
    _check(_raised(lambda: conn.execute("SELEC 1")), "config", "syntax")


def test_unknown_errors_are_not_guessed() -> None:
    assert classify(ValueError("something odd")) is None
    assert describe(RuntimeError()) == "RuntimeError: RuntimeError()"  # never a bare class name


# ---- the character set of a MySQL connection ---------------------------------------------------
@pytest.mark.mariadb
def test_mysql_charset_utf8_warns_before_anything_is_sent(mariadb_database: str, caplog) -> None:
    import logging

    caplog.set_level(logging.WARNING, logger="polyv_connector")
    utf8 = SqlSource(lambda: mysql_connect(mariadb_database, charset="utf8"), sql="SELECT 1 AS a", dialect="mysql")
    utf8.columns()  # the probe: what opens the first connection, before any request
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "character set is utf8mb3" in warnings[0]
    assert "not utf8mb4" in warnings[0] and "source_sql" in warnings[0] and "'?'" in warnings[0]
    utf8.columns()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1  # once per setting
    # The warning is right: through that connection a 4-byte character does not survive.
    conn = mysql_connect(mariadb_database, charset="utf8")
    try:
        cur = conn.cursor()
        cur.execute("CREATE TABLE emoji (v TEXT) CHARACTER SET utf8mb4")
        cur.execute("SET SESSION sql_mode = ''")  # not strict: what is lost is lost silently
        cur.execute("INSERT INTO emoji VALUES (%s)", ("a😀",))
        conn.commit()
        cur.execute("SELECT v FROM emoji")
        stored = [r[0] for r in cur.fetchall()]
        assert stored and stored[0].startswith("a?") and "😀" not in stored[0]  # mangled, never the emoji
    finally:
        conn.close()
    caplog.clear()
    good = SqlReportTable(lambda: mysql_connect(mariadb_database), "polyv_sync_report", dialect="mysql")
    assert good.table == "polyv_sync_report"
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
