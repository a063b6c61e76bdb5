"""The services the tests use (PostgreSQL, MariaDB, Redis), in one place: where they are, whether
they answer, and throwaway places in them. A pytest plugin (``tests/conftest.py`` names it), so
its fixtures serve every folder; plain modules (``tests/lock_worker.py``) import the constants.

A service that does not answer skips the test that needs it, except in CI (``CI`` set), where it
fails the test: a CI run must never pass by skipping what it was meant to show. Every schema,
database or Redis key made here is a throwaway with a unique name: other runs share the servers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

PG_DSN = os.environ.get("POLYV_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")
PG_URI = os.environ.get("POLYV_TEST_PG_URI", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_HOST = os.environ.get("POLYV_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("POLYV_TEST_MYSQL_PORT", "3306"))
REDIS_HOST = os.environ.get("POLYV_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("POLYV_TEST_REDIS_PORT", "6379"))


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def require(service: str, problem: str | None) -> None:
    """Fail (in CI) or skip (elsewhere) the current test when ``problem`` says ``service`` is down."""
    if problem is None:
        return
    if in_ci():
        pytest.fail(f"{service} is required in CI and not reachable: {problem}")
    pytest.skip(f"{service} not reachable: {problem}")


def redis_url(db: int) -> str:
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


# ---- PostgreSQL --------------------------------------------------------------------------------
def pg_connect(**kwargs: Any) -> Any:
    import psycopg

    return psycopg.connect(PG_DSN, **kwargs)


def pg_rows(sql: str, params: tuple = ()) -> list[tuple]:
    with pg_connect() as conn:
        return conn.execute(sql, params or None).fetchall()  # type: ignore[no-any-return]


def pg_exec(sql: str, params: tuple = ()) -> None:
    with pg_connect(autocommit=True) as conn:
        conn.execute(sql, params or None)


def pg_problem() -> str | None:
    """None when PostgreSQL answers, else why not."""
    import psycopg

    try:
        with pg_connect(connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"{PG_DSN!r}: {exc}"
    return None


@pytest.fixture(scope="session")
def pg_available() -> bool:
    require("PostgreSQL", pg_problem())
    return True


@pytest.fixture
def pg_schema(pg_available: bool) -> Iterator[str]:
    """A throwaway schema in database ``test``, dropped afterwards."""
    name = f"polyv_t_{uuid.uuid4().hex[:10]}"
    pg_exec(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        pg_exec(f"DROP SCHEMA IF EXISTS {name} CASCADE")


# ---- MariaDB -----------------------------------------------------------------------------------
def mysql_connect(database: str | None = None) -> Any:
    """A PyMySQL connection to the local MariaDB as root (utf8mb4: 4-byte characters survive)."""
    import pymysql

    return pymysql.connect(
        host=MYSQL_HOST, port=MYSQL_PORT, user="root", password="", database=database, charset="utf8mb4"
    )


def mariadb_problem() -> str | None:
    """None when MariaDB answers, else why not."""
    try:
        mysql_connect().close()
    except Exception as exc:
        return f"{MYSQL_HOST}:{MYSQL_PORT}: {exc}"
    return None


@pytest.fixture(scope="session")
def mariadb_available() -> bool:
    require("MariaDB", mariadb_problem())
    return True


@pytest.fixture
def mysql_db(mariadb_available: bool) -> Iterator[str]:
    """A throwaway database on the local MariaDB (utf8mb4), dropped afterwards."""
    name = f"polyv_t_{uuid.uuid4().hex[:10]}"
    conn = mysql_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
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


# ---- Redis -------------------------------------------------------------------------------------
def redis_problem() -> str | None:
    """None when Redis answers PING, else why not."""
    try:
        import redis
    except ImportError as exc:
        return f"the redis client is not installed: {exc}"
    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=3).ping()
    except redis.RedisError as exc:
        return f"{REDIS_HOST}:{REDIS_PORT}: {type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def redis_available() -> bool:
    require("Redis", redis_problem())
    return True
