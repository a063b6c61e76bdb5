"""What a source query may not call: the functions, per dialect, that reach outside the query's data.

A read-only transaction stops writes to the database, not a function that reads a server file
(``pg_read_file``), opens another connection (``dblink_exec`` writes through it), signals or
locks other sessions, sleeps, or runs a string as SQL (``query_to_xml``, DuckDB's ``query``).
:func:`refusal` names the first such thing a parsed query holds; the query check
(:func:`polyv_connector.warehouse.readonly.check_read_query`) refuses the query with it, before
any connection is opened. Pure: sqlglot trees in, a message or ``None`` out.

Names are compared case-insensitively and without their schema (``pg_catalog."pg_read_file"``
is ``pg_read_file``); a pattern ending in ``*`` is a prefix. A function name that is not a plain
identifier (letters, digits, ``_``, ``$``) is refused in every dialect: PostgreSQL's ``U&"..."``
escapes (``U&"pg\\0072ead_file"`` is ``pg_read_file``) would otherwise hide any name from this
list. A database function that calls a refused one (a ``SECURITY DEFINER`` wrapper) is beyond
any parser: the source role's grants are the defence there (see the trust model in the docs).
"""

from __future__ import annotations

import re
from fnmatch import translate
from functools import cache
from typing import Any, Final

#: PostgreSQL: server files, large objects (server-side file import/export), other connections
#: (``dblink``), other sessions (signals, advisory locks, NOTIFY), sleeps, settings, functions
#: that run a string as SQL, and server administration (WAL, replication, logs, statistics).
POSTGRES_REFUSED: Final[tuple[str, ...]] = (
    *("pg_read_file", "pg_read_binary_file", "pg_ls_*", "pg_stat_file", "pg_file_*", "pg_logdir_ls"),
    *("lo_*", "loread", "lowrite", "dblink*"),
    *("pg_terminate_backend", "pg_cancel_backend", "pg_signal_backend", "pg_advisory*", "pg_try_advisory*"),
    *("pg_sleep*", "pg_notify", "set_config"),
    *("query_to_xml*", "cursor_to_xml*"),
    *("pg_reload_conf", "pg_rotate_logfile*", "pg_current_logfile", "pg_promote", "pg_switch_wal"),
    *("pg_create_restore_point", "pg_backup_*", "pg_start_backup", "pg_stop_backup", "pg_wal_replay_*"),
    *("pg_*replication_slot*", "pg_replication_origin_*", "pg_logical_*", "pg_export_snapshot"),
    *("pg_stat_reset*", "pg_import_system_collations", "pg_log_backend_memory_contexts"),
)

#: MySQL/MariaDB: server files, sleeps and CPU burners, named locks (other sessions), waits on
#: replication, sequences (they write) and the usual shell-running UDFs.
MYSQL_REFUSED: Final[tuple[str, ...]] = (
    *("load_file", "sleep", "benchmark"),
    *("get_lock", "release_lock", "release_all_locks", "is_free_lock", "is_used_lock"),
    *("master_pos_wait", "source_pos_wait", "master_gtid_wait", "wait_for_executed_gtid_set"),
    *("wait_until_sql_thread_after_gtids", "nextval", "setval", "sys_exec", "sys_eval", "sys_get", "sys_set"),
)

#: DuckDB: readers of files and URLs, scanners of other databases and lakes, functions that run
#: a string (or a plan) as a query, secrets, data generators and sequences (they write), Arrow
#: scans of raw memory pointers, the UI's web server. The engine refuses most of these too once
#: external access is off (:func:`polyv_connector.warehouse.confine.lock_down_duckdb`).
DUCKDB_REFUSED: Final[tuple[str, ...]] = (
    *("read_*", "glob", "sniff_csv", "parquet_*", "iceberg_*", "delta_*", "ducklake_*", "st_read*"),
    *("postgres_*", "mysql_*", "sqlite_*", "query", "query_table", "from_substrait*", "json_execute_serialized_sql"),
    *("duckdb_secrets", "which_secret", "load_aws_credentials", "dbgen", "dsdgen", "nextval", "setval"),
    *("checkpoint", "force_checkpoint", "arrow_scan*", "pandas_scan", "python_map_function", "start_ui*", "stop_ui*"),
)

#: The lists by sqlglot dialect; a dialect not named here is checked against none of them (its
#: query still passes the name rule and the single-read-only-statement rule).
REFUSED_FUNCTIONS: Final[dict[str, tuple[str, ...]]] = {
    "postgres": POSTGRES_REFUSED,
    "mysql": MYSQL_REFUSED,
    "doris": MYSQL_REFUSED,  # MySQL-protocol engines: the same server functions
    "starrocks": MYSQL_REFUSED,
    "duckdb": DUCKDB_REFUSED,
}

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
#: Characters no table name holds but a DuckDB file path or URL does: DuckDB reads a table
#: reference such as ``'/etc/passwd'`` or ``"s3://b/x.parquet"`` as a file (a replacement scan).
_PATH_CHARS = re.compile(r"[/\\:*?.~]")


def refused_in(dialect: str | None) -> tuple[str, ...]:
    """The refused function patterns of a sqlglot dialect (empty when it has no list)."""
    return REFUSED_FUNCTIONS.get(dialect or "", ())


def refusal(statement: Any, dialect: str | None) -> str | None:
    """What in a parsed ``statement`` reaches outside the query's data, or ``None``.

    Checked: every function call (its name plain, not on ``dialect``'s list), MySQL's user
    variable assignment (``@v := ...``, state kept in the session), and on DuckDB every table
    reference that names a file or URL rather than a table.
    """
    from sqlglot import exp

    matcher = _matcher(dialect)
    for node in statement.walk():
        if isinstance(node, exp.PropertyEQ) and isinstance(node.this, exp.Parameter | exp.SessionParameter):
            return f"a user variable assignment ({node.sql(dialect=dialect)[:80]})"
        if isinstance(node, exp.Func):
            if isinstance(node, exp.Anonymous) and not _PLAIN_NAME.fullmatch(node.name):
                return f"a function whose name is not a plain identifier ({node.name[:80]!r})"
            for name in _names(node):
                if matcher is not None and matcher.match(name.lower()):
                    return f"the function {name.lower()}() (it reaches outside the query's data)"
        if _is_path_table(node, dialect):
            return f"a file or URL as a table ({node.this.name[:80]!r})"
    return None


@cache
def _matcher(dialect: str | None) -> re.Pattern[str] | None:
    """One expression for a dialect's patterns (a query may call thousands of functions)."""
    patterns = refused_in(dialect)
    return re.compile("|".join(translate(p) for p in patterns)) if patterns else None


def _is_path_table(node: Any, dialect: str | None) -> bool:
    """Whether ``node`` is a DuckDB table reference naming a file or URL (``FROM '/etc/passwd'``)."""
    from sqlglot import exp

    return (
        dialect == "duckdb"
        and isinstance(node, exp.Table)
        and isinstance(node.this, exp.Identifier)
        and bool(_PATH_CHARS.search(node.this.name))
    )


def _names(node: Any) -> list[str]:
    """The names a function call may go by: as written (an unknown function keeps its name) or,
    for a function sqlglot knows, every name sqlglot has for it (``READ_CSV`` for ``read_csv``)."""
    from sqlglot import exp

    if isinstance(node, exp.Anonymous):
        return [node.name]
    return [str(n) for n in node.sql_names()]
