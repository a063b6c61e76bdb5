"""Reading an expectation suite file (GX 1.x JSON) with errors a person can act on.

GX 1.24 is lenient in places that would make a run silently check less than the user wrote:
``ExpectationSuite(**data)`` logs and *drops* an expectation of an unknown type instead of
raising. So each expectation is built on its own first, and any problem becomes a
:class:`ConfigError` naming the file, the expectation's position and type, and the problem.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from polyv_connector.errors import ConfigError

# Keys GX 1.x accepts on one expectation in a suite file (ExpectationConfiguration's fields).
_EXPECTATION_KEYS = frozenset(
    {
        "type",
        "kwargs",
        "meta",
        "notes",
        "description",
        "id",
        "rendered_content",
        "expectation_context",
        "success_on_last_run",
        "severity",
    }
)

# The bundled default suite, shipped at the repository root (and, when packaged, as data).
BUNDLED_SUITE_NAME = "viewer_custom_fields.json"


def bundled_suite_path() -> Path:
    """Path of the bundled default suite (``expectations/viewer_custom_fields.json``)."""
    here = Path(__file__).resolve()
    candidates = [
        here.parents[1] / "data" / BUNDLED_SUITE_NAME,  # installed: package data
        here.parents[2] / "expectations" / BUNDLED_SUITE_NAME,  # source checkout
    ]
    for path in candidates:
        if path.is_file():
            return path
    return candidates[-1]


def read_suite_file(path: str | os.PathLike[str], setting: str) -> dict[str, Any]:
    """The suite file's JSON object, checked for the GX 1.x shape (no GX import needed)."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(setting, f"expectation suite file {where} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(setting, f"cannot read the expectation suite file {where}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            setting,
            f"expectation suite file {where} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            setting,
            f"expectation suite file {where} must hold a JSON object "
            f'{{"name": ..., "expectations": [...]}}, not {type(data).__name__}',
        )
    expectations = data.get("expectations", [])
    if "expectation_suite_name" in data or (
        isinstance(expectations, list) and any(isinstance(e, dict) and "expectation_type" in e for e in expectations)
    ):
        raise ConfigError(
            setting,
            f"expectation suite file {where} is in the Great Expectations 0.x "
            'format ("expectation_suite_name", "expectation_type"); GX 1.x '
            'suites use "name" and, per expectation, "type": rename those keys',
        )
    if not isinstance(data.get("name"), str) or not data["name"].strip():
        raise ConfigError(setting, f'expectation suite file {where} has no "name" (a non-empty string)')
    if not isinstance(expectations, list):
        raise ConfigError(setting, f'expectation suite file {where}: "expectations" must be a list')
    for i, exp in enumerate(expectations, start=1):
        if not isinstance(exp, dict):
            raise ConfigError(
                setting,
                f"expectation suite file {where}: expectation #{i} must be a "
                f'JSON object {{"type": ..., "kwargs": {{...}}}}',
            )
        if not isinstance(exp.get("type"), str):
            raise ConfigError(setting, f'expectation suite file {where}: expectation #{i} has no "type"')
        unknown = sorted(set(exp) - _EXPECTATION_KEYS)
        if unknown:
            raise ConfigError(
                setting, f"expectation suite file {where}: expectation #{i} ({exp['type']}) has unknown keys {unknown}"
            )
        if not isinstance(exp.get("kwargs", {}), dict):
            raise ConfigError(
                setting, f'expectation suite file {where}: expectation #{i} ({exp["type"]}): "kwargs" must be an object'
            )
    return data


def _pydantic_problem(exc: Exception) -> str:
    """One line per offending field out of a (pydantic v1) validation error."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    seen: dict[str, str] = {}
    for err in errors():
        field = ".".join(str(p) for p in err.get("loc", ())) or "?"
        # A field typed as a union reports one error per alternative; the first says enough.
        seen.setdefault(field, err.get("msg", "invalid"))
    return "; ".join(f"{field}: {msg}" for field, msg in seen.items())


def import_gx() -> Any:
    """Import Great Expectations, keeping its import chatter out of the run's log.

    GX logs a few hundred INFO lines while importing (docs decorators, data source
    registration); under the CLI's INFO logging they would bury the run's own lines. Only
    a logger nobody configured is quietened.
    """
    gx_log = logging.getLogger("great_expectations")
    if gx_log.level == logging.NOTSET:
        gx_log.setLevel(logging.WARNING)
    import great_expectations

    return great_expectations


def build_suite(data: dict[str, Any], path: str, setting: str) -> Any:
    """A ``great_expectations.ExpectationSuite`` from checked file data; ConfigError on any problem."""
    gx = import_gx()
    from great_expectations.exceptions.exceptions import GreatExpectationsError
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    expectations = []
    for i, raw in enumerate(data.get("expectations", []), start=1):
        where = f"expectation suite file {path}: expectation #{i} ({raw['type']})"
        try:
            expectations.append(ExpectationConfiguration(**raw).to_domain_obj())
        except GreatExpectationsError as exc:
            problem = str(exc)
            if "not found" in problem:
                problem = "unknown expectation type (not a GX 1.x Core expectation)"
            raise ConfigError(setting, f"{where}: {problem}") from None
        except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise ConfigError(setting, f"{where}: invalid kwargs: {_pydantic_problem(exc)}") from None
    fields = {k: data[k] for k in ("meta", "notes", "id") if k in data}
    try:
        suite = gx.ExpectationSuite(name=data["name"], expectations=expectations, **fields)
    except (GreatExpectationsError, TypeError, ValueError) as exc:
        raise ConfigError(setting, f"expectation suite file {path}: {exc}") from None
    if len(suite.expectations) != len(expectations):  # GX drops what it cannot build; we refuse
        raise ConfigError(
            setting,
            f"expectation suite file {path}: Great Expectations accepted only "
            f"{len(suite.expectations)} of {len(expectations)} expectations",
        )
    return suite
