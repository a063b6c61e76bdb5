"""The value parsers of the run settings: ``(raw value, label) -> typed value``.

A raw value is what a front end was given: a flag's text, an operator argument (perhaps a
rendered template, so "True" and "0.5" arrive as text), a connection extra or an environment
variable. Each parser raises :class:`ConfigError` naming ``label``, the setting as the user gave
it. Pure: DAG files import this (through :mod:`polyv_connector.runspec`) at parse time.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from polyv_connector.errors import ConfigError

Parser = Callable[[Any, str], Any]


def text(raw: Any, label: str) -> str | None:
    """Text with surrounding whitespace removed; blank text is none."""
    if raw is None:
        return None
    stripped = str(raw).strip()
    return stripped or None


def flag(raw: Any, label: str) -> bool:
    """A flag that may arrive as a rendered template or environment string ("True", "0", ...)."""
    if isinstance(raw, bool):
        return raw
    stripped = str(raw).strip().lower()
    if stripped in ("true", "1", "yes", "y", "on"):
        return True
    if stripped in ("false", "0", "no", "n", "off", "", "none"):
        return False
    raise ConfigError(label, f"expected true or false, got {raw!r}")


def optional_flag(raw: Any, label: str) -> bool | None:
    """A :func:`flag` whose blank value means "not given" (the front end's default decides)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return flag(raw, label)


def retention_days(value: Any, label: str) -> int | None:
    """``value`` as a whole number of days (at least 1), ``None`` (off) when not set."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        days = int(str(value).strip())
    except ValueError:
        raise ConfigError(label, f"must be a whole number of days; got {value!r}") from None
    if days < 1:
        raise ConfigError(label, f"must be at least 1 day (leave it unset to keep everything); got {days}")
    return days


def integer(raw: Any, label: str) -> int:
    try:
        if isinstance(raw, bool):
            raise ValueError(raw)
        if isinstance(raw, float):
            if not raw.is_integer():
                raise ValueError(raw)
            return int(raw)
        return int(str(raw).strip())
    except (TypeError, ValueError):
        raise ConfigError(label, f"expected an integer, got {raw!r}") from None


def number(raw: Any, label: str) -> float:
    try:
        if isinstance(raw, bool):
            raise ValueError(raw)
        value = float(str(raw).strip()) if isinstance(raw, str) else float(raw)
    except (TypeError, ValueError):
        raise ConfigError(label, f"expected a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(label, f"expected a finite number, got {raw!r}")
    return value


def fraction(raw: Any, label: str) -> float | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none")):
        return None
    try:
        value = number(raw, label)
    except ConfigError:
        raise ConfigError(label, f"expected a number between 0 and 1, got {raw!r}") from None
    if not 0 <= value <= 1:
        raise ConfigError(label, f"expected a number between 0 and 1, got {raw!r}")
    return value


def limit_fraction(raw: Any, label: str) -> float | None:
    """A share that may exceed 1 (a limit on changes: new keys may outnumber known ones);
    ``none`` (or blank) is ``None``, the limit switched off."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none")):
        return None
    try:
        value = number(raw, label)
    except ConfigError:
        raise ConfigError(
            label, f"expected a number of at least 0, or none to switch the limit off, got {raw!r}"
        ) from None
    if value < 0:
        raise ConfigError(label, f"expected a number of at least 0, or none to switch the limit off, got {raw!r}")
    return value


def null_values(raw: Any, label: str) -> str:
    """What a NULL value means: ``reject`` the item, or ``clear`` the field (send an empty value)."""
    stripped = str(raw).strip().lower()
    if stripped not in ("reject", "clear"):
        raise ConfigError(label, f"must be reject or clear, got {raw!r}")
    return stripped


def signature_method(raw: Any, label: str) -> str:
    stripped = str(raw).strip().upper()
    if stripped not in ("MD5", "SHA256"):
        raise ConfigError(label, f"must be MD5 or SHA256, got {raw!r}")
    return stripped


#: What a run does (the operator's ``mode``; the CLI's subcommands ``run``, ``plan``, ``apply``).
MODES = ("run", "plan", "apply")


def run_mode(raw: Any, label: str) -> str:
    """One of :data:`MODES` (blank: ``run``)."""
    value = str(raw).strip().lower() if raw is not None else ""
    if not value:
        return "run"
    if value not in MODES:
        raise ConfigError(label, f"must be one of {', '.join(MODES)}; got {raw!r}")
    return value


def field_map(raw: Any, label: str) -> dict[str, str]:
    """Wide form: ``{"FIELD_ID": "column"}``, or CLI's repeated ``FIELD_ID=COLUMN`` strings."""
    if raw is None or raw == [] or raw == {}:
        return {}
    if isinstance(raw, Mapping):
        pairs = [(str(k).strip(), str(v).strip()) for k, v in raw.items()]
    else:
        pairs = []
        for item in raw:
            field_id, sep, column = str(item).partition("=")
            if not sep:
                raise ConfigError(label, f"expected FIELD_ID=COLUMN, got {item!r}")
            pairs.append((field_id.strip(), column.strip()))
    mapping: dict[str, str] = {}
    for field_id, column in pairs:
        if not field_id or not column:
            raise ConfigError(label, "expected FIELD_ID=COLUMN with both parts non-empty")
        if field_id in mapping:
            raise ConfigError(label, f"customFieldId {field_id!r} is mapped twice")
        mapping[field_id] = column
    return mapping


def parameters(raw: Any, label: str) -> Any:
    """Bound query parameters as given (a sequence or a mapping); empty ones are none."""
    return raw or None


def names(raw: Any, label: str) -> tuple[str, ...] | None:
    """A list of names: a list, a JSON list, the Python repr of a list (what a Jinja template
    renders from ``var.json``), or comma-separated text."""
    if raw is None:
        return None
    items: Any = raw
    if isinstance(raw, str):
        stripped = raw.strip()
        if stripped.startswith("["):
            try:
                items = json.loads(stripped)
            except ValueError:
                try:
                    items = ast.literal_eval(stripped)  # literals only: never evaluates code
                except (ValueError, SyntaxError):
                    raise ConfigError(label, f"expected a list of names, got {raw!r}") from None
        else:
            items = [part for part in stripped.split(",") if part.strip()]
    if isinstance(items, str) or not isinstance(items, list | tuple | set | frozenset):
        raise ConfigError(label, f"expected a list of names, got {raw!r}")
    if not all(isinstance(item, str) and item.strip() for item in items):
        raise ConfigError(label, f"expected a list of non-empty names, got {raw!r}")
    return tuple(item.strip() for item in items)


def parse_prefixes(raw: Any, label: str) -> tuple[str, ...] | None:
    """A list of path prefixes: a list, or its JSON text (as an Airflow Variable renders)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        stripped = raw.strip()
        if not stripped:
            return None
        try:
            raw = json.loads(stripped)
        except ValueError:
            raise ConfigError(label, f"expected a JSON list of path prefixes, got {stripped!r}") from None
    if isinstance(raw, str) or not isinstance(raw, Sequence) or not all(isinstance(p, str) and p for p in raw):
        raise ConfigError(label, "expected a list of non-empty path prefixes")
    return tuple(raw)
