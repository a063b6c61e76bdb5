"""A database named by a URL, for the command line (Airflow uses its connections instead).

``postgresql://user[:password]@host[:port]/database`` (psycopg 3, else psycopg2),
``mysql://`` or ``mariadb://`` (mysqlclient, else PyMySQL; utf8mb4), ``duckdb:///abs/file.duckdb``
or ``duckdb:relative.duckdb`` (opened read-only). ``+driver`` suffixes (``postgresql+psycopg``)
are accepted and ignored. The password may stay out of the command line (and so out of ``ps``
and shell history): a URL without one takes the password of ``POLYV_DB_URL``, and with no URL
given ``POLYV_DB_URL`` is the URL. No message shows a password (:func:`redact_url`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from polyv_connector.errors import ConfigError

#: The environment variable holding the URL, or the password of a URL given without one.
DB_URL_ENV = "POLYV_DB_URL"
_SCHEMES = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "duckdb": "duckdb",
}


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query, parts.fragment))


def resolve_db_url(given: str | None, setting: str = "--db-url", env: Mapping[str, str] | None = None) -> str:
    """The URL to use: ``given`` (its password from ``POLYV_DB_URL`` when it has none), else
    ``POLYV_DB_URL``; a ``ConfigError`` naming ``setting`` when there is none."""
    env = os.environ if env is None else env
    from_env = (env.get(DB_URL_ENV) or "").strip()
    url = (given or "").strip()
    if not url:
        if not from_env:
            raise ConfigError(setting, f"name the database (or set {DB_URL_ENV})")
        return from_env
    parts = urlsplit(url)
    secret = urlsplit(from_env).password if from_env else None
    if parts.password is None and secret is not None and parts.scheme.split("+")[0] != "duckdb":
        user = parts.username or urlsplit(from_env).username or ""
        host = parts.netloc.rpartition("@")[2]
        url = urlunsplit((parts.scheme, f"{user}:{secret}@{host}", parts.path, parts.query, parts.fragment))
    return url


def connect_url(url: str, setting: str = "--db-url") -> tuple[Callable[[], Any], str]:
    """A connection factory for ``url`` and the dialect name (``postgresql``, ``mysql``, ``duckdb``).

    :raises ConfigError: an unknown scheme, or no driver installed for it.
    """
    parts = urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme.split("+")[0].lower())
    if scheme is None:
        raise ConfigError(setting, f"{redact_url(url)!r}: give a postgresql://, mysql://, mariadb:// or duckdb:/// URL")
    if scheme == "duckdb":
        path = unquote(parts.netloc + parts.path) if parts.netloc else unquote(parts.path)
        if not path:
            raise ConfigError(setting, "a duckdb URL names a file: duckdb:///abs/file.duckdb")
        duckdb = _driver(setting, "duckdb")
        return (lambda: duckdb.connect(path, read_only=True)), scheme
    if scheme == "postgresql":
        plain = urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))
        try:
            psycopg = importlib.import_module("psycopg")
            return (lambda: psycopg.connect(plain)), scheme
        except ImportError:
            psycopg2 = _driver(setting, "psycopg2")
            return (lambda: psycopg2.connect(plain)), scheme
    kwargs: dict[str, Any] = {
        "host": parts.hostname or "localhost",
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "charset": "utf8mb4",
    }
    database = parts.path.lstrip("/")
    try:
        mysqldb = importlib.import_module("MySQLdb")
        extra: dict[str, Any] = {"passwd": unquote(parts.password or "")}
        if database:
            extra["db"] = unquote(database)
        return (lambda: mysqldb.connect(**kwargs, **extra)), scheme
    except ImportError:
        pymysql = _driver(setting, "pymysql")
        named = {"password": unquote(parts.password or ""), "database": unquote(database) or None}
        return (lambda: pymysql.connect(**kwargs, **named)), scheme


def _driver(setting: str, module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(setting, f"the {module} driver is not installed") from None
