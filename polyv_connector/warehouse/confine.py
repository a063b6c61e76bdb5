"""A source connection confined to its database, by the engine itself (the guard's second line).

The query check (:mod:`polyv_connector.warehouse.readonly`, :mod:`~polyv_connector.warehouse.refused`)
refuses what it can see; these settings make the engine refuse what it cannot:

* **DuckDB**: ``enable_external_access = false`` (no file read or written, no URL, no
  ``ATTACH`` of a file, no Python replacement scan), extensions neither installed, autoloaded
  nor taken from the community repository, then ``lock_configuration = true`` so that nothing
  (no later ``SET``) turns them back on. DuckDB's settings belong to the database *instance*,
  which every connection to the same file in this process shares: a report or state table
  written to that file in the same run works under them (Arrow inserts need no external
  access), and a second source connection finds them already locked. A DAG author who needs
  DuckDB views over object storage opts out with the operator's ``duckdb_external_access``
  (not templated, never from params); the parser's refusals stay.
* **MySQL/MariaDB**: multi-statement queries off for the session (``COM_SET_OPTION``), so the
  parser is no longer the only single-statement barrier: mysqlclient and mysql-connector-python
  turn them on by default. PyMySQL leaves them off unless asked; a connection that asked is
  refused.
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Final

from polyv_connector.errors import InputError
from polyv_connector.warehouse import dbapi
from polyv_connector.warehouse.dialect import dialect_of_connection

log = logging.getLogger("polyv_connector")

#: The DuckDB settings of a source connection, set in this order, then locked.
DUCKDB_SETTINGS: Final[tuple[tuple[str, bool], ...]] = (
    ("enable_external_access", False),
    ("autoinstall_known_extensions", False),
    ("autoload_known_extensions", False),
    ("allow_community_extensions", False),
)
#: The client capability bit of multi-statement queries (the same in every MySQL protocol driver).
MYSQL_MULTI_STATEMENTS: Final = 1 << 16
#: ``COM_SET_OPTION`` and its ``MYSQL_OPTION_MULTI_STATEMENTS_OFF`` argument.
_COM_SET_OPTION, _MULTI_STATEMENTS_OFF = 0x1B, 1


def confine(conn: Any, setting: str, *, duckdb_external_access: bool = False) -> None:
    """Confine a freshly opened source connection to its database (see the module's text).

    ``duckdb_external_access`` leaves a DuckDB connection's settings as they are (the author's
    opt-out). Raises :class:`InputError` naming ``setting`` when the engine cannot be confined.
    """
    engine = dialect_of_connection(conn).name
    if engine == "duckdb" and not duckdb_external_access:
        lock_down_duckdb(conn, setting)
    elif engine == "mysql":
        single_statements(conn, setting)


def _duckdb_settings(conn: Any) -> dict[str, str]:
    names = [name for name, _ in DUCKDB_SETTINGS] + ["lock_configuration"]
    marks = ", ".join("?" * len(names))
    rows = conn.execute(f"SELECT name, lower(value) FROM duckdb_settings() WHERE name IN ({marks})", names).fetchall()
    return {str(name): str(value) for name, value in rows}


def lock_down_duckdb(conn: Any, setting: str) -> None:
    """:data:`DUCKDB_SETTINGS` on ``conn``'s database instance, then its configuration locked;
    checked after (an instance locked earlier with external access on is refused)."""
    try:
        current = _duckdb_settings(conn)
        if current.get("lock_configuration") != "true":
            for name, value in DUCKDB_SETTINGS:
                conn.execute(f"SET {name} = {str(value).lower()}")
            conn.execute("SET lock_configuration = true")
            current = _duckdb_settings(conn)
    except Exception as exc:
        raise InputError(
            setting, f"cannot lock down the DuckDB source connection: {type(exc).__name__}: {exc}"
        ) from exc
    wrong = [name for name, value in DUCKDB_SETTINGS if current.get(name) != str(value).lower()]
    if wrong or current.get("lock_configuration") != "true":
        raise InputError(
            setting,
            "the DuckDB source connection's settings are locked with "
            f"{', '.join(wrong) or 'lock_configuration'} on: its database was opened elsewhere in this "
            "process with another configuration",
        )


def single_statements(conn: Any, setting: str) -> None:
    """Turn multi-statement queries off for a MySQL/MariaDB connection's session."""
    driver = dbapi.driver_of(conn)
    try:
        if driver == "MySQLdb":  # mysqlclient: on by default
            conn.set_server_option(_MULTI_STATEMENTS_OFF)
            return
        if driver == "mysql" and hasattr(conn, "_send_cmd"):  # mysql-connector-python (pure)
            conn._send_cmd(_COM_SET_OPTION, struct.pack("<H", _MULTI_STATEMENTS_OFF))
            return
    except Exception as exc:
        raise InputError(
            setting, f"cannot turn multi-statement queries off on the source connection: {type(exc).__name__}: {exc}"
        ) from exc
    flags = getattr(conn, "client_flag", None)
    if flags is None:
        flags = getattr(conn, "client_flags", None)
    if isinstance(flags, int) and flags & MYSQL_MULTI_STATEMENTS:
        raise InputError(
            setting,
            f"the source connection ({driver}) runs several statements per query and this driver cannot "
            "turn that off: remove MULTI_STATEMENTS from its client flags, or use mysqlclient",
        )
    if not isinstance(flags, int):
        log.info("cannot tell whether the %s source connection allows several statements per query", driver)
