"""Database errors, classified by what the caller must do: fix a setting, or retry later.

Every DB-API driver raises its own classes, but each database says what went wrong in a code
it documents: PostgreSQL's SQLSTATE (psycopg 3 ``sqlstate``, psycopg2 ``pgcode``), MySQL and
MariaDB's error number (the first argument of the exception in mysqlclient, PyMySQL and
mysql-connector-python), DuckDB's exception class. :func:`classify` reads them; where a
driver gives no code (a connection that never opened), the message decides.

* ``config``: bad credentials, an unknown database, schema or table, a missing permission,
  SQL the database cannot parse. Retrying cannot help: exit 2 / ``AirflowFailException``.
* ``temporary``: connection refused or lost, a lock wait timeout, a deadlock, too many
  connections, a server shutting down. Retrying later may help: exit 75 / a retried task.

:func:`database_error` turns an exception into the package's error of that class, with the
database's own message (never a bare class name); the CLI and the operator log it.
"""

from __future__ import annotations

import re
from typing import Literal

from polyv_connector.errors import ConfigError, DependencyUnavailable, PolyvConnectorError

Kind = Literal["config", "temporary"]

# ---- PostgreSQL: SQLSTATE classes and codes (Appendix A of its manual) ------------------------
_PG_TEMPORARY_CLASSES = ("08", "53", "57", "58")  # connection, resources, operator intervention, system
_PG_TEMPORARY_CODES = frozenset({"40001", "40P01", "55P03", "55006"})  # serialization, deadlock, lock
_PG_CONFIG_CLASSES = ("28", "3D", "3F", "42", "0L", "0P")  # auth, catalog, schema, syntax/access, roles

# ---- MySQL / MariaDB error numbers (server 1xxx, client 2xxx) ---------------------------------
_MYSQL_TEMPORARY = frozenset(
    {
        1040,  # too many connections
        1053,  # server shutdown in progress
        1152,  # aborted connection
        1158,  # network read error
        1159,  # network read timeout
        1160,  # network write error
        1161,  # network write timeout
        1203,  # max_user_connections
        1205,  # lock wait timeout
        1213,  # deadlock
        1226,  # user resource limit (max_user_connections per hour...)
        1927,  # connection killed (MariaDB)
        2002,  # cannot connect through socket
        2003,  # cannot connect to server (refused)
        2005,  # unknown server host (DNS may be down)
        2006,  # server has gone away
        2013,  # lost connection during query
        2055,  # lost connection (system error)
        4031,  # disconnected by the server for inactivity (MySQL 8)
    }
)
_MYSQL_CONFIG = frozenset(
    {
        1044,  # access denied to database
        1045,  # access denied (bad credentials)
        1049,  # unknown database
        1054,  # unknown column
        1064,  # syntax error
        1142,  # command denied on table
        1143,  # column access denied
        1146,  # table does not exist
        1227,  # needs a privilege
        1251,  # client does not support the authentication protocol
        1370,  # routine access denied
        1698,  # access denied (auth plugin)
        3118,  # account locked
    }
)

# ---- messages, where a driver gives no code (mostly: a connection that never opened) ----------
_TEMPORARY_TEXT = re.compile(
    r"connection refused|could not connect|can't connect|cannot connect|timeout expired|timed out|"
    r"server closed the connection|connection (was )?(lost|reset|closed)|gone away|lost connection|"
    r"too many (connections|clients)|the database system is (starting up|shutting down|in recovery)|"
    r"could not set lock on file|conflicting lock|deadlock|lock wait timeout|could not translate host name|"
    r"temporary failure in name resolution|no route to host|network is unreachable",
    re.IGNORECASE,
)
_CONFIG_TEXT = re.compile(
    r"authentication failed|access denied|password|permission denied|does not exist|unknown database|"
    r"no such table|not found|syntax error|parser error|catalog error|binder error|read-only|read only",
    re.IGNORECASE,
)


def _mysql_errno(exc: BaseException) -> int | None:
    errno = getattr(exc, "errno", None)  # mysql-connector-python
    if isinstance(errno, int) and errno > 0:
        return errno
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):  # mysqlclient, PyMySQL: (errno, message)
        return args[0]
    return None


def _pg_sqlstate(exc: BaseException) -> str | None:
    for attr in ("sqlstate", "pgcode"):  # psycopg 3, psycopg2
        code = getattr(exc, attr, None)
        if isinstance(code, str) and len(code) == 5:
            return code
    return None


def classify(exc: BaseException) -> Kind | None:
    """``config`` or ``temporary`` for a database error, ``None`` when nothing tells which."""
    module = type(exc).__module__.split(".")[0]
    state = _pg_sqlstate(exc)
    if state is not None:
        if state in _PG_TEMPORARY_CODES or state.startswith(_PG_TEMPORARY_CLASSES):
            return "temporary"
        if state.startswith(_PG_CONFIG_CLASSES):
            return "config"
    elif module in ("MySQLdb", "pymysql", "mysql", "mariadb", "aiomysql"):
        errno = _mysql_errno(exc)
        if errno in _MYSQL_TEMPORARY:
            return "temporary"
        if errno in _MYSQL_CONFIG:
            return "config"
    elif module in ("duckdb", "_duckdb"):
        name = type(exc).__name__
        if name in ("CatalogException", "ParserException", "BinderException", "PermissionException"):
            return "config"
        if name == "TransactionException":  # a write-write conflict between two transactions
            return "temporary"
    text = str(exc)
    if _TEMPORARY_TEXT.search(text):
        return "temporary"
    if _CONFIG_TEXT.search(text):
        return "config"
    return None


def describe(exc: BaseException) -> str:
    """``Class (code): message`` of a database error: the database's words, never a bare class name."""
    code: object = _pg_sqlstate(exc) or _mysql_errno(exc)
    message = str(exc).strip()
    args: tuple[object, ...] = tuple(getattr(exc, "args", ()))
    if isinstance(code, int) and len(args) >= 2 and isinstance(args[1], str):
        message = args[1].strip()  # mysqlclient / PyMySQL: str() is the tuple's repr
    if not message:
        message = repr(exc)
    return f"{type(exc).__name__}{f' ({code})' if code else ''}: {message}"


def database_error(
    exc: BaseException,
    setting: str,
    doing: str,
    default: type[ConfigError] | type[DependencyUnavailable] = ConfigError,
    config: type[ConfigError] = ConfigError,
) -> PolyvConnectorError:
    """The package's error for ``exc``, raised while ``doing`` (``"cannot read the state table"``).

    Temporary errors become :class:`DependencyUnavailable` (exit 75, retried), configuration
    errors ``config`` (a :class:`ConfigError` or subclass, exit 2); an error nothing classifies
    becomes ``default``. The message names the setting and holds the database's own words.
    """
    kind = classify(exc)
    message = f"{doing}: {describe(exc)}"
    error: PolyvConnectorError
    if kind == "temporary" or (kind is None and default is DependencyUnavailable):
        error = DependencyUnavailable(setting, message + " (temporary: retry later)")
    else:
        error = config(setting, message)
    return error
