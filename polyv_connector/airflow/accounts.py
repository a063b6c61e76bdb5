"""The ``accounts`` param of the accounts DAG, checked and turned into one operator's kwargs per
account (what ``PolyvViewerFieldSyncOperator.partial(...).expand_kwargs(...)`` maps over).

Pure: no Airflow import, no I/O. Whoever may trigger the DAG writes this list, so everything in
it is checked here, every problem reported at once, before any mapped task starts. What needs a
connection (the POLYV connection allowlist, the source query's read-only check) is checked by
each mapped task itself, so one bad account fails its own task only.
"""

from __future__ import annotations

import re
from typing import Any

from polyv_connector.errors import ConfigError

#: The keys an account entry may have.
ACCOUNT_KEYS = ("polyv_conn_id", "source_sql", "source_table")
#: Table names are spliced into SQL text: ``[db.][schema.]table`` identifiers only.
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*){0,2}$")
#: Airflow's default ``[core] max_map_length``: more mapped tasks than this fail the expansion.
MAX_ACCOUNTS = 1024


def account_kwargs(accounts: Any, setting: str = "accounts") -> list[dict[str, str | None]]:
    """``[{"polyv_conn_id": ..., "source_sql": ... | "source_table": ...}, ...]`` → the same
    entries with both source keys present (the absent one ``None``), in the given order.

    Raises :class:`ConfigError` naming ``setting`` and listing every problem: not a non-empty
    list of objects, unknown keys, a missing or blank ``polyv_conn_id``, not exactly one of
    ``source_sql`` and ``source_table``, a table that is not an identifier, one
    ``polyv_conn_id`` twice (two tasks of one account would only wait for each other's lock).
    """
    if not isinstance(accounts, list) or not accounts:
        raise ConfigError(setting, f"expected a non-empty list of accounts, got {_kind(accounts)}")
    if len(accounts) > MAX_ACCOUNTS:
        raise ConfigError(setting, f"at most {MAX_ACCOUNTS} accounts per run (Airflow's max_map_length)")
    problems: list[str] = []
    result: list[dict[str, str | None]] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(accounts):
        where = f"{setting}[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected an object, got {_kind(entry)}")
            continue
        unknown = sorted(str(k) for k in entry if k not in ACCOUNT_KEYS)
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(ACCOUNT_KEYS)})")
        conn_id = _text(entry.get("polyv_conn_id"))
        if conn_id is None:
            problems.append(f"{where}.polyv_conn_id: a non-empty connection id is required")
        elif conn_id in seen:
            problems.append(f"{where}.polyv_conn_id: {conn_id!r} is already {setting}[{seen[conn_id]}]")
        else:
            seen[conn_id] = index
        sql, table = _text(entry.get("source_sql")), _text(entry.get("source_table"))
        for key in ("source_sql", "source_table"):
            if entry.get(key) is not None and not isinstance(entry.get(key), str):
                problems.append(f"{where}.{key}: expected text, got {_kind(entry.get(key))}")
        if (sql is None) == (table is None):
            problems.append(f"{where}: give exactly one of source_sql and source_table")
        elif table is not None and not TABLE_NAME.match(table):
            problems.append(f"{where}.source_table: expected [schema.]table, got {table!r}")
        result.append({"polyv_conn_id": conn_id, "source_sql": sql, "source_table": table})
    if problems:
        raise ConfigError(setting, "; ".join(problems))
    return result


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()


def _kind(value: Any) -> str:
    """A value's JSON kind, not the value (a mistyped secret must not be echoed)."""
    names = {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)
