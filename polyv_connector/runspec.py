"""The one description of a run: the table of its settings (:mod:`polyv_connector.settings`: every
setting, its default, where it may come from, and its name in each front end) and
:func:`resolve`, which turns what a front end was given into a checked :class:`RunSpec`.

The CLI (flags), the Airflow operator (arguments) and the ``polyv`` connection (extras) only
*translate* into this module: none of them holds a default or parses a value of its own.
Each :class:`Setting` names the field it fills (``target``, e.g. ``send.batch_size``), so
:func:`resolve` fills the :class:`RunSpec` and the option objects in one loop; the few defaults
that depend on another setting are named functions (:data:`DERIVATIONS`). The operator's
arguments and template fields come from this table too (:data:`OPERATOR_SETTINGS`).
Precedence for every setting: the front end's explicit value (flag or argument), then the
connection's extra (operator only), then the environment variable, then the built-in default.

Errors name the setting the way the user gave it: ``--max-rps`` on the command line,
``max_rps`` on the operator, ``POLYV_BUDGET_RPS`` when it came from the environment, and
``connection 'polyv_default': extra 'max_rps'`` when it came from the connection.

Nothing here does I/O or imports anything heavy: DAG files import it at parse time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polyv_connector.config import ColumnMapping, SendOptions, SyncOptions
from polyv_connector.errors import ConfigError
from polyv_connector.model import DEFAULT_BUDGET_RPS
from polyv_connector.settings import BUNDLED_SUITE, DEFAULT_SUITE_MAX_REJECTED, Front

# The table, named here too: the front ends and the docs read "the run's settings" from runspec.
from polyv_connector.settings import DEFAULTS as DEFAULTS
from polyv_connector.settings import OPERATOR_SETTINGS as OPERATOR_SETTINGS
from polyv_connector.settings import SETTINGS as SETTINGS
from polyv_connector.settings import Setting as Setting

if TYPE_CHECKING:
    from polyv_connector.budget import SharedBudget

#: The resolved values by target object and field: ``{"send": {"batch_size": 1000}, ...}``.
Parts = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class RunSpec:
    """One run, resolved and checked: what every front end hands to the engine."""

    options: SyncOptions
    input_path: str | None = None
    report_path: str | None = None
    summary_json: str | None = None
    #: The suite file to validate with (``default`` already resolved to the bundled file).
    suite_path: str | None = None
    source_conn_id: str | None = None
    source_sql: str | None = None
    source_table: str | None = None
    source_parameters: Any = None
    allowed_source_conn_ids: tuple[str, ...] | None = None
    allowed_polyv_conn_ids: tuple[str, ...] | None = None
    report_conn_id: str | None = None
    report_table: str | None = None
    state_table: str | None = None
    state_conn_id: str | None = None
    diff_in_warehouse: bool = False
    validation_dir: str | None = None
    #: Where trigger-time paths may point (None: anywhere; see :func:`polyv_connector.trigger_paths.confine`).
    report_dir: str | None = None
    allowed_input_prefixes: tuple[str, ...] | None = None
    allowed_suite_prefixes: tuple[str, ...] | None = None
    budget_url: str | None = None
    budget_conn_id: str | None = None
    budget_rps: float = DEFAULT_BUDGET_RPS
    seed: int | None = None
    runs_table: str | None = None
    report_retention_days: int | None = None
    runs_retention_days: int | None = None
    report_day_partitions: bool = False
    #: ``run``, ``plan`` or ``apply`` (:mod:`polyv_connector.plans`), and the plan's file.
    mode: str = "run"
    plan_path: str | None = None
    #: None: Airflow's ``[operators] default_deferrable`` decides (the operator reads it).
    deferrable: bool | None = None
    #: Where each value came from, for error messages: canonical key -> label.
    labels: Mapping[str, str] = field(default_factory=dict)

    def label(self, key: str) -> str:
        """The name of ``key`` as the user gave it (flag, argument, variable or extra)."""
        return self.labels.get(key, key)

    def open_budget(self, api_base_url: str, run_id: str, url: str | None = None) -> SharedBudget:
        """The request budget this run draws on (checked now: a bad or unreachable budget fails
        before anything is sent). ``url`` overrides :attr:`budget_url` (e.g. from a connection)."""
        from polyv_connector.budget import open_budget

        return open_budget(
            url or self.budget_url,
            api_base_url=api_base_url,
            rate=self.budget_rps,
            run_id=run_id,
            max_rps=self.options.send.max_rps,
            setting_url=self.label("budget_conn_id" if url else "budget_url"),
            setting_rate=self.label("budget_rps"),
            setting_max_rps=self.label("max_rps"),
        )

    @property
    def table_conn_id(self) -> str | None:
        """The connection that keeps the report table when none is named: the source's."""
        return self.report_conn_id or self.source_conn_id

    @property
    def state_conn(self) -> str | None:
        """The connection of the state table: its own, else the report's, else the source's."""
        return self.state_conn_id or self.report_conn_id or self.source_conn_id


def resolve(
    given: Mapping[str, Any],
    *,
    front: Front,
    env: Mapping[str, str] | None = None,
    extras: Mapping[str, Any] | None = None,
    extras_label: str = "connection",
) -> RunSpec:
    """Build the :class:`RunSpec` from a front end's values (``None`` = not given).

    ``extras`` are the ``polyv`` connection's extras (operator only); ``extras_label`` names
    the connection in messages. Raises :class:`ConfigError` naming the setting as given.
    """
    env = os.environ if env is None else env
    extras = extras or {}
    unknown = set(given) - set(SETTINGS)
    if unknown:  # a front end out of step with this table: a bug, not a user error
        raise TypeError(f"unknown run settings: {sorted(unknown)}")
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for key, setting in SETTINGS.items():
        raw, label = _pick(setting, given, front, env, extras, extras_label)
        labels[key] = label
        if raw is None:
            values[key] = setting.default
            continue
        parsed = setting.parse(raw, label)
        if parsed is None and (setting.blank_is_off or setting.none_is_off):
            values[key] = None
        else:
            values[key] = setting.default if parsed is None else parsed

    allowed = values["allowed_source_conn_ids"]
    source_conn_id = values["source_conn_id"]
    if allowed is not None and source_conn_id and source_conn_id not in allowed:
        # Checked before any connection is looked up: a trigger-time connection id must not
        # reach a database the DAG author did not choose (pg_read_file through another role).
        raise ConfigError(
            labels["source_conn_id"], _not_allowed(source_conn_id, "source", "allowed_source_conn_ids", allowed)
        )
    parts: Parts = {"spec": {}, "sync": {}, "send": {}, "mapping": {}}
    for key, setting in SETTINGS.items():
        owner, name = setting.target.split(".")
        parts[owner][name] = values[key]
    for derive in DERIVATIONS:
        derive(parts)
    options = SyncOptions(send=SendOptions(**parts["send"]), mapping=_column_mapping(parts["mapping"]), **parts["sync"])
    try:
        options.validate()
    except ConfigError as exc:
        # The options name settings canonically ("max_rps"); say it as the user gave it.
        key = _CANONICAL.get(exc.setting, exc.setting)
        raise ConfigError(labels.get(key, key), _message_of(exc)) from None
    return RunSpec(options=options, labels=labels, **parts["spec"])


# ---- derivations: defaults that depend on another setting ----------------------------------------


def _cap_from_budget(parts: Parts) -> None:
    """A run's cap defaults to the budget's whole rate: alone, it may use all of it."""
    if parts["send"]["max_rps"] is None:
        parts["send"]["max_rps"] = parts["spec"]["budget_rps"]


def _gate_with_suite(parts: Parts) -> None:
    """A suite brings the rejected-fraction gate (unless one is given).

    A suite is how a team says what a good table looks like: with it comes the gate that stops a
    broken upstream table from overwriting good data. Without one, rejected rows (often null
    values of a wide table) are reported, not a reason to stop.
    """
    if parts["sync"]["max_rejected_fraction"] is None and parts["spec"]["suite_path"]:
        parts["sync"]["max_rejected_fraction"] = DEFAULT_SUITE_MAX_REJECTED


def _bundled_suite(parts: Parts) -> None:
    """``default`` names the suite bundled with the package; the options validate with the file."""
    if parts["spec"]["suite_path"] == BUNDLED_SUITE:
        from polyv_connector.expectations.suite import bundled_suite_path

        parts["spec"]["suite_path"] = str(bundled_suite_path())
    parts["sync"]["expectations_path"] = parts["spec"]["suite_path"]


#: Applied in order after every setting has its value (the gate reads the suite as given).
DERIVATIONS: tuple[Callable[[Parts], None], ...] = (_cap_from_budget, _gate_with_suite, _bundled_suite)


def _column_mapping(given: Mapping[str, Any]) -> ColumnMapping:
    """Wide form when fields are mapped, else the long form's three columns."""
    if given["fields"]:
        return ColumnMapping.wide(given["viewer_id_column"], given["fields"])
    return ColumnMapping(given["viewer_id_column"], given["field_id_column"], given["value_column"])


def check_polyv_conn_id(conn_id: str, allowed: Any, front: Front = "operator") -> None:
    """Refuse a ``polyv`` connection id outside ``allowed`` (the raw ``allowed_polyv_conn_ids``:
    a list, its JSON text or comma-separated names; ``None``: any).

    Called before the connection is read (:func:`resolve` runs over the connection's extras, so
    it comes too late): a trigger-time id must not send through an account, or to a base URL,
    the DAG author did not choose. Raises :class:`ConfigError` naming ``polyv_conn_id``.
    """
    setting = SETTINGS["allowed_polyv_conn_ids"]
    names = setting.parse(allowed, setting.label(front))
    if names is not None and conn_id not in names:
        raise ConfigError("polyv_conn_id", _not_allowed(conn_id, "POLYV", setting.label(front), names))


def _not_allowed(conn_id: str, kind: str, allow_setting: str, allowed: tuple[str, ...]) -> str:
    names = ", ".join(allowed) or "none"
    return f"connection {conn_id!r} is not an allowed {kind} connection ({allow_setting}: {names})"


# Names the option objects use in their own ConfigErrors -> the canonical setting.
_CANONICAL = {"--field": "fields"}


def _message_of(exc: ConfigError) -> str:
    return str(exc).split(": ", 1)[-1]


def _pick(
    setting: Setting,
    given: Mapping[str, Any],
    front: Front,
    env: Mapping[str, str],
    extras: Mapping[str, Any],
    extras_label: str,
) -> tuple[Any, str]:
    """The raw value of ``setting`` from the first source that has one, and its label."""
    raw = given.get(setting.key)
    blank = isinstance(raw, str) and not raw.strip()
    if raw is not None and (not blank or setting.blank_is_off):
        return raw, setting.label(front)
    if setting.extra and front == "operator":
        # The UI may store conn-fields with Airflow's historical "extra__<type>__" prefix.
        value = extras.get(setting.extra, extras.get(f"extra__polyv__{setting.extra}"))
        if value not in (None, ""):
            return value, f"{extras_label}: extra {setting.extra!r}"
    if setting.env and env.get(setting.env, "").strip():
        return env[setting.env], setting.env
    return None, setting.label(front)


def cli_error_label(setting: str) -> str:
    """The CLI flag of a canonical setting name (unknown names are returned as they are)."""
    found = SETTINGS.get(setting)
    return found.label("cli") if found else setting
