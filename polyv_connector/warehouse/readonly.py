"""Source SQL is one read-only query: checked with a SQL parser, then run in a read-only transaction.

A source query may come from whoever can trigger a DAG (a ``source_sql`` param), and the
operator cannot tell it from the DAG author's: every source query is treated as untrusted.

Two layers, because neither is enough alone:

* :func:`check_read_query` parses the text with sqlglot in the database's dialect and accepts
  exactly one statement that is a query (``SELECT``, ``WITH ... SELECT``, ``VALUES``, ``TABLE``,
  set operations of those), with nothing inside that writes (a data-modifying ``WITH``,
  ``SELECT ... INTO``, ``FOR UPDATE``). A second statement is what a read-only transaction
  cannot stop: ``...; COMMIT; DROP TABLE t`` ends the transaction first.
* :func:`begin_read_only` puts the connection in a read-only transaction where the database has
  one (PostgreSQL: ``SET TRANSACTION READ ONLY``; MySQL/MariaDB: ``SET SESSION TRANSACTION READ
  ONLY``; SQLite: ``PRAGMA query_only``; each then checked), so what no parser can see (a
  function that writes, ``nextval()``) is refused by the server (DuckDB: ``BEGIN TRANSACTION
  READ ONLY``).

The parser check also refuses what reaches outside the query's data without writing (a server
file, another connection, another session, a sleep): :mod:`polyv_connector.warehouse.refused`;
and the engine is told to refuse it too (DuckDB without external access, MySQL one statement per
query): :mod:`polyv_connector.warehouse.confine`.

A read-only role for the source connection is the third layer: see
docs/warehouses.md#roles-a-read-only-source-connection.
"""

from __future__ import annotations

import logging
from itertools import pairwise
from typing import Any

from polyv_connector.errors import ConfigError, InputError
from polyv_connector.warehouse import dbapi, refused
from polyv_connector.warehouse.dialect import dialect_named, driver_dialect_name

log = logging.getLogger("polyv_connector")

#: With no known dialect, the query must pass in each of these: their string and comment rules
#: differ (a backslash escapes a quote in MySQL, not in PostgreSQL; ``$$`` quotes in PostgreSQL),
#: and a text that is one statement under all of them is one statement wherever it runs.
_UNKNOWN_DIALECTS: tuple[str | None, ...] = (None, "postgres", "mysql")

# SQLSTATE 25006: PostgreSQL (and mysql-connector-python) refused a write inside a read-only transaction.
READ_ONLY_SQLSTATE = "25006"
# MySQL/MariaDB ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION; mysqlclient and PyMySQL give the code as args[0].
MYSQL_READ_ONLY_ERRNO = 1792


def sqlglot_dialect(name: str | None) -> str | None:
    """The sqlglot dialect of an Airflow ``dialect_name`` (``None`` when sqlglot has none)."""
    from sqlglot.dialects.dialect import Dialect

    key = dialect_named(name).sqlglot
    if key is None:
        return None
    try:
        Dialect.get_or_raise(key)
    except ValueError:
        return None
    return key


def dialect_of_driver(conn: Any) -> str | None:
    """The sqlglot dialect of a DB-API connection's driver, when the driver says which database."""
    name = driver_dialect_name(dbapi.driver_of(conn))
    return None if name is None else sqlglot_dialect(name)


def _writing_nodes() -> tuple[type, ...]:
    from sqlglot import exp

    names = [
        *("Insert", "Update", "Delete", "Merge", "Copy", "Into", "Lock", "LoadData"),  # writes
        *("Create", "Drop", "Alter", "TruncateTable", "Comment", "Grant", "Revoke"),  # DDL
        *("Command", "Set", "Transaction", "Commit", "Rollback", "Use", "Pragma", "Execute", "Declare"),
        *("Analyze", "Cache", "Uncache", "Refresh", "Kill"),
    ]
    # getattr: a node class a future sqlglot renames must not break the check (the others stay).
    return tuple(cls for cls in (getattr(exp, n, None) for n in names) if isinstance(cls, type))


def check_read_query(sql: str, dialect: str | None, setting: str = "source_sql") -> str:
    """``sql`` as one read-only query, trailing ``;`` and comments cut; else :class:`ConfigError`.

    ``dialect`` is a sqlglot dialect name; ``None`` (unknown) requires the query to pass in the
    generic, PostgreSQL and MySQL dialects alike. A text the parser cannot read is refused too:
    what cannot be parsed cannot be shown to be one query.
    """
    dialects = (dialect,) if dialect else _UNKNOWN_DIALECTS
    cut = sql
    for one in dialects:
        cut = _check_in(sql, one, setting)
    return cut


def _check_in(sql: str, dialect: str | None, setting: str) -> str:
    import sqlglot
    from sqlglot import TokenType, exp
    from sqlglot.errors import ParseError, TokenError

    where = f" ({dialect} dialect)" if dialect else ""
    try:
        tokens = sqlglot.tokenize(sql, read=dialect)
        hidden = _hidden_from_the_parser(tokens)
        if hidden:
            raise ConfigError(setting, f"must be a read-only query that stays in the database: it contains {hidden}")
        statements = sqlglot.parse(_neutral_placeholders(sql, tokens), read=dialect)
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        detail = first.get("description") or str(exc).splitlines()[0]
        line = f" at line {first['line']}, column {first['col']}" if first.get("line") else ""
        raise ConfigError(setting, f"cannot be parsed as SQL{where}: {detail}{line}") from None
    except TokenError as exc:
        raise ConfigError(setting, f"cannot be parsed as SQL{where}: {exc}") from None
    except RecursionError:
        # Thousands of nested parentheses or calls: refused, never a crash of the task.
        raise ConfigError(setting, f"nests too deeply to be checked{where}") from None
    found = [s for s in statements if s is not None and not isinstance(s, exp.Semicolon)]
    if len(found) != 1:
        raise ConfigError(
            setting,
            f"must be exactly one SQL statement, found {len(found)}{where}; a trailing ';' is fine",
        )
    statement = found[0]
    query = statement.unnest() if isinstance(statement, exp.Subquery) else statement
    if not isinstance(query, exp.Select | exp.SetOperation | exp.Values):
        raise ConfigError(
            setting,
            f"must be a read-only query (SELECT, WITH ... SELECT, VALUES or TABLE), not {_kind(statement)}",
        )
    writing = _writing_nodes()
    for node in statement.walk():
        if isinstance(node, writing):
            raise ConfigError(
                setting,
                f"must be a read-only query: it contains {_kind(node)} "
                "(a data-modifying WITH, SELECT ... INTO or a locking clause is refused)",
            )
    outside = refused.refusal(statement, dialect)
    if outside:
        raise ConfigError(setting, f"must be a read-only query that stays in the database: it calls {outside}{where}")
    # Cut after the last token: a trailing ';' or comment would break the subquery the source
    # wraps the query in (a line comment would swallow the closing parenthesis).
    real = [t for t in tokens if t.token_type != TokenType.SEMICOLON]
    return sql[: real[-1].end + 1] if real else sql


def _hidden_from_the_parser(tokens: list[Any]) -> str | None:
    """What in ``tokens`` the server would run but the parser cannot see, if anything.

    MySQL and MariaDB run the text of a ``/*! ... */`` (``/*M! ... */``) comment, which sqlglot
    keeps as a comment: ``SELECT 1 /*! INTO OUTFILE '/tmp/x' */`` writes a file on the server.
    Refused in every dialect (no other engine gives such a comment a meaning, so nothing real is
    lost). ``INTO OUTFILE``/``DUMPFILE``, which sqlglot cannot parse, is named here too.
    """
    previous = ""
    for token in tokens:
        for comment in token.comments or ():
            if comment.startswith("!") or comment[:2].upper() == "M!":
                return "a MySQL executable comment (/*! ... */ or /*M! ... */)"
        word = token.text.upper()
        if previous == "INTO" and word in ("OUTFILE", "DUMPFILE"):
            return f"INTO {word} (it writes a file on the database server)"
        previous = word
    return None


def _neutral_placeholders(sql: str, tokens: list[Any]) -> str:
    """``sql`` with the drivers' ``%s`` and ``%(name)s`` markers (format and pyformat paramstyles,
    outside strings and comments: found as tokens) written as ``?``, which every dialect parses.

    Only the parsed text changes: the query that runs is the original. A marker binds a value,
    never SQL text, so this changes no statement's structure.
    """
    from sqlglot import TokenType

    def adjacent(seq: list[Any]) -> bool:
        return all(b.start == a.end + 1 for a, b in pairwise(seq))

    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.token_type == TokenType.MOD:
            simple = tokens[i : i + 2]
            named = tokens[i : i + 5]
            if len(simple) == 2 and simple[1].text == "s" and adjacent(simple):
                spans.append((tok.start, simple[1].end))
                i += 2
                continue
            if (
                len(named) == 5
                and named[1].token_type == TokenType.L_PAREN
                and named[3].token_type == TokenType.R_PAREN
                and named[4].text == "s"
                and adjacent(named)
            ):
                spans.append((tok.start, named[4].end))
                i += 5
                continue
        i += 1
    for start, end in reversed(spans):
        sql = sql[:start] + "?" + sql[end + 1 :]
    return sql


def _kind(node: Any) -> str:
    from sqlglot import exp

    if isinstance(node, exp.Command):  # sqlglot's "statement it does not model": CALL, DO, SET...
        return str(node.this).upper()
    if isinstance(node, exp.Into):
        return "SELECT ... INTO"
    if isinstance(node, exp.Lock):
        return "a locking clause (FOR UPDATE/SHARE)"
    key: str = node.key
    return key.upper().replace("TRUNCATETABLE", "TRUNCATE")


def begin_read_only(conn: Any, setting: str) -> bool:
    """Put ``conn`` in a read-only transaction where the database has one; ``True`` if it did.

    PostgreSQL (psycopg 3, psycopg2, pg8000): ``SET TRANSACTION READ ONLY`` as the transaction's
    first statement, then ``SHOW transaction_read_only`` must say ``on`` (an autocommit connection
    or a proxy that drops the setting fails here, before the query runs). SQLite: ``PRAGMA
    query_only``. MySQL/MariaDB: ``SET SESSION TRANSACTION READ ONLY`` (every transaction the
    connection starts after it, autocommit or not, is read-only; the streaming ``SSCursor`` runs
    on the same session), then the session's ``transaction_read_only`` (``tx_read_only`` on
    MariaDB) must be 1. DuckDB: ``BEGIN TRANSACTION READ ONLY`` (a write, ``nextval()`` among them,
    then fails). Other databases: ``False``; the parser check and the role's grants remain.
    """
    driver = dbapi.driver_of(conn)
    try:
        if dialect_of_driver(conn) == "postgres":
            # In autocommit every statement is its own transaction and the setting would not
            # reach the query: the source's connection is its own, so turn autocommit off.
            if getattr(conn, "autocommit", False):
                conn.autocommit = False
            with dbapi.cursor(conn) as cur:
                cur.execute("SET TRANSACTION READ ONLY")
                cur.execute("SHOW transaction_read_only")
                row = cur.fetchone()
            state = str(row[0]).lower() if row else ""
            if state != "on":
                raise InputError(
                    setting,
                    f"the source connection did not enter a read-only transaction (transaction_read_only={state})",
                )
            return True
        if dialect_of_driver(conn) == "mysql":
            # SESSION, not the next-transaction form: a later implicit transaction (autocommit
            # on, or a driver that commits between statements) stays read-only too.
            with dbapi.cursor(conn) as cur:
                cur.execute("SET SESSION TRANSACTION READ ONLY")
                cur.execute(_MYSQL_READ_ONLY_STATE)
                values = {str(v).upper() for _, v in cur.fetchall()}
            if values != {"ON"}:
                raise InputError(setting, "the MySQL/MariaDB source connection did not become read-only")
            return True
        if dialect_of_driver(conn) == "duckdb" and hasattr(conn, "execute"):
            # Only the connection's own statements (conn.sql / conn.execute) run in it: a
            # DuckDB cursor is another connection. The source reads through conn.sql.
            conn.execute("BEGIN TRANSACTION READ ONLY")
            return True
        if driver == "sqlite3":
            with dbapi.cursor(conn) as cur:
                cur.execute("PRAGMA query_only = ON")
                cur.execute("PRAGMA query_only")
                row = cur.fetchone()
            if not row or int(row[0]) != 1:
                raise InputError(setting, "the SQLite source connection did not become query-only")
            return True
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            setting, f"cannot start a read-only transaction on the source connection: {type(exc).__name__}: {exc}"
        ) from exc
    log.debug("no read-only transaction for driver %s: the source relies on the query check and its role", driver)
    return False


# MySQL 8 names the variable transaction_read_only (tx_read_only is gone since 8.0.3); MariaDB
# 10.x knows only tx_read_only (transaction_read_only came in 11.1). A SELECT of an unknown
# @@variable fails, SHOW lists whichever exist: every one of them must be ON.
_MYSQL_READ_ONLY_STATE = "SHOW SESSION VARIABLES WHERE Variable_name IN ('tx_read_only', 'transaction_read_only')"


def is_read_only_violation(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing a write in a read-only transaction."""
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if code == READ_ONLY_SQLSTATE:
        return True
    errno = getattr(exc, "errno", None)
    if errno is None and exc.args and isinstance(exc.args[0], int):
        errno = exc.args[0]
    if errno == MYSQL_READ_ONLY_ERRNO:
        return True
    # SQLite's query_only refusal carries no code, only its message.
    return "attempt to write a readonly database" in str(exc)
