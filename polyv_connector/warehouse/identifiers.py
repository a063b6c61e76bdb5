"""Table names and identifiers spliced into SQL text.

A DB-API driver binds values, never identifiers, so every table name that reaches SQL text goes
through :func:`check_table_name` and every column name through :func:`quote_identifier`.
"""

from __future__ import annotations

import re

from polyv_connector.errors import ConfigError
from polyv_connector.warehouse.dialect import quote_with

# A plain or quoted identifier part; a table name is one to three parts joined by dots.
_PART = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\])'
_TABLE_NAME = re.compile(rf"^{_PART}(?:\.{_PART}){{0,2}}$")
_ONE_PART = re.compile(_PART)


def check_table_name(table: str, setting: str) -> str:
    """``table`` stripped, or :class:`ConfigError` if it is not ``[catalog.][schema.]table``.

    Table names are spliced into SQL text (a DB-API cannot bind identifiers), so only plain or
    quoted identifiers are accepted: this is what keeps a templated table name from injecting SQL.
    """
    table = (table or "").strip()
    if not _TABLE_NAME.match(table):
        raise ConfigError(
            setting,
            f"{table!r} is not a table name of the form [schema.]table "
            "(letters, digits, _ and $, or quoted identifiers)",
        )
    return table


def quote_identifier(name: str, identifier_format: str = '"{}"') -> str:
    """``name`` quoted with ``identifier_format`` (e.g. ``"{}"`` or ```{}```), closing char doubled
    (the rule lives in :mod:`polyv_connector.warehouse.dialect`)."""
    return quote_with(name, identifier_format)


def split_table_name(table: str) -> list[str]:
    """The dot-separated parts of a name :func:`check_table_name` accepted, quotes kept."""
    parts: list[str] = []
    pos = 0
    while pos < len(table):
        match = _ONE_PART.match(table, pos)
        if match is None:
            raise ValueError(f"{table!r} is not a checked table name")
        parts.append(match.group())
        pos = match.end() + 1  # past the dot
    return parts


def unquote_identifier(part: str) -> str:
    """One identifier as the database stores it: quotes removed, an unquoted one lower-cased
    (unquoted identifiers are case-insensitive wherever this matters)."""
    if part[:1] == '"':
        return part[1:-1].replace('""', '"')
    if part[:1] in ("`", "["):
        return part[1:-1]
    return part.lower()


#: The longest identifier each engine keeps (PostgreSQL: 63 bytes, NAMEDATALEN - 1, silently
#: truncating longer ones; MySQL/MariaDB: 64 characters); engines not named have no limit that
#: our names reach.
IDENTIFIER_LIMITS: dict[str, tuple[int, str]] = {
    "postgresql": (63, "bytes"),
    "redshift": (127, "bytes"),
    "mysql": (64, "characters"),
    "mssql": (128, "characters"),
    "oracle": (128, "bytes"),
}


def identifier_too_long(name: str, dialect: str) -> str | None:
    """Why ``name`` (one unquoted identifier) is over ``dialect``'s limit, or ``None`` if it fits."""
    limit = IDENTIFIER_LIMITS.get(dialect)
    if limit is None:
        return None
    most, unit = limit
    size = len(name.encode("utf-8")) if unit == "bytes" else len(name)
    if size <= most:
        return None
    return f"{name!r} is {size} {unit} long; {dialect} keeps identifiers of at most {most} {unit}"


def with_suffix(table: str, suffix: str) -> str:
    """``table`` (a checked name) with ``suffix`` appended to its last part, quoting kept:
    ``s.report`` -> ``s.report_runs``, ``"My Report"`` -> ``"My Report_runs"``."""
    parts = split_table_name(table)
    last = parts[-1]
    if last[:1] in ('"', "`", "["):
        last = last[:-1] + suffix + last[-1]
    else:
        last = last + suffix
    return ".".join([*parts[:-1], last])
