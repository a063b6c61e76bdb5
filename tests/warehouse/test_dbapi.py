"""Cursor and transaction helpers: cleanup that neither masks the real error nor hides its own."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from polyv_connector.warehouse import dbapi


class _StuckCursor:
    """A cursor whose close() fails, as one on a dropped connection does."""

    def close(self) -> None:
        raise sqlite3.OperationalError("connection lost")


def test_a_cursor_is_closed_after_the_block(tmp_path) -> None:
    conn = sqlite3.connect(tmp_path / "w.db")
    with dbapi.cursor(conn) as cur:
        cur.execute("SELECT 1")
    with pytest.raises(sqlite3.ProgrammingError, match="closed cursor"):
        cur.execute("SELECT 1")


def test_a_failure_to_close_is_logged_not_raised(caplog) -> None:
    caplog.set_level(logging.DEBUG, "polyv_connector")
    with dbapi.closing(_StuckCursor()):
        pass
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "could not close a database cursor: OperationalError: connection lost")
    ]


def test_a_failure_to_close_never_masks_the_error_of_the_block(caplog) -> None:
    caplog.set_level(logging.DEBUG, "polyv_connector")
    with pytest.raises(KeyError), dbapi.closing(_StuckCursor()):
        raise KeyError("the real problem")
    assert [r.levelname for r in caplog.records] == ["DEBUG"]


def test_a_transaction_commits_on_success_and_rolls_back_on_error(tmp_path) -> None:
    path = tmp_path / "w.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x INT)")
    conn.commit()
    with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
        cur.execute("INSERT INTO t VALUES (1)")

    def insert_then_fail() -> None:
        with dbapi.transaction(conn), dbapi.cursor(conn) as cur:
            cur.execute("INSERT INTO t VALUES (2)")
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        insert_then_fail()
    assert sqlite3.connect(path).execute("SELECT x FROM t").fetchall() == [(1,)]


def test_a_failed_rollback_is_logged_at_debug_and_the_error_stands(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG, "polyv_connector")
    conn = sqlite3.connect(tmp_path / "w.db")

    def lost() -> None:
        conn.close()  # the connection dies inside the transaction
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"), dbapi.transaction(conn):
        lost()
    # rollback() on a closed sqlite3 connection raises: logged, and the block's error wins.
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records] == [
        ("DEBUG", "could not roll back a database connection")
    ]
    dbapi.close_quietly(conn)
