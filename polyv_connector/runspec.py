"""The one description of a run: every setting, its default, where it may come from, and its name
in each front end; and :func:`resolve`, which turns what a front end was given into a checked
:class:`RunSpec`.

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
from typing import TYPE_CHECKING, Any, Literal

from polyv_connector.config import ColumnMapping, SendOptions, SyncOptions
from polyv_connector.errors import ConfigError
from polyv_connector.model import DEFAULT_BUDGET_RPS, FIELD_ID, MAX_RPS_CEILING, RUNS_SUFFIX, VALUE, VIEWER_ID
from polyv_connector.parsers import (
    Parser,
    field_map,
    flag,
    fraction,
    integer,
    names,
    number,
    optional_flag,
    parameters,
    parse_prefixes,
    retention_days,
    signature_method,
    text,
)
from polyv_connector.partitioning import MAX_PARTITIONS
from polyv_connector.report_rows import DEFAULT_REPORT_ROWS, check_report_rows

if TYPE_CHECKING:
    from polyv_connector.budget import SharedBudget

Front = Literal["cli", "operator"]

#: The default share of rejected items above which a run with a suite sends nothing.
DEFAULT_SUITE_MAX_REJECTED = 0.05
#: The suite name that means "the suite bundled with the package".
BUNDLED_SUITE = "default"


#: The resolved values by target object and field: ``{"send": {"batch_size": 1000}, ...}``.
Parts = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Setting:
    """One setting of a run: its canonical name (the operator argument), default, sources, and
    the field it fills: ``target`` is ``<object>.<field>``, the object one of ``spec``
    (:class:`RunSpec`), ``sync`` (:class:`SyncOptions`), ``send`` (:class:`SendOptions`) and
    ``mapping`` (:class:`ColumnMapping`)."""

    key: str
    default: Any
    parse: Parser
    help: str
    target: str
    cli: str | None = None  # the flag, or None when the CLI does not offer it
    env: str | None = None  # an environment variable that supplies a worker-wide default
    extra: str | None = None  # a key of the ``polyv`` connection's extras
    operator: bool = True  # whether the operator takes it as an argument
    templated: bool = True  # whether the operator renders it as a Jinja template (a template field)
    blank_is_off: bool = False  # "" (or None given explicitly) switches the feature off
    # The flag's own help when the flag does the opposite of ``help`` (``--no-check-fields``
    # switches off what ``check_fields`` describes); None: ``help`` fits the flag too.
    flag_help: str | None = None

    def label(self, front: Front) -> str:
        if front == "cli" and self.cli:
            return self.cli
        return self.key

    def help_for(self, front: Front) -> str:
        """What this setting does, as the front end names it: the flag's help on the command
        line, the argument's (and connection extra's) for the operator."""
        if front == "cli" and self.flag_help:
            return self.flag_help
        return self.help


def _s(key: str, default: Any, parse: Parser, help: str, **kw: Any) -> Setting:
    kw.setdefault("cli", "--" + key.replace("_", "-"))
    kw.setdefault("target", "spec." + key)
    return Setting(key, default, parse, help, **kw)


# Sending and reading defaults are the option types' own (config.py); the table reads them there.
#: Every setting of a run, in the order the CLI's help lists them.
SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        # where rows come from and where the report goes
        _s(
            "input_path",
            None,
            text,
            "Parquet file, directory (files read in name order) or URL (s3://, gs://, any fsspec URL)",
            cli="--input",
        ),
        _s("report_path", None, text, "the per-item report (Parquet, written atomically)", cli="--report"),
        _s("summary_json", None, text, "also write the JSON summary to this file", operator=False),
        _s("source_conn_id", None, text, "Airflow connection of a SQL source (a common-sql DbApiHook)", cli=None),
        _s("source_sql", None, text, "the query that reads the source rows", cli=None),
        _s("source_table", None, text, "a table to read the source rows from", cli=None),
        _s("source_parameters", None, parameters, "bound parameters of source_sql", cli=None),
        _s(
            "allowed_source_conn_ids",
            None,
            names,
            "the connections source_conn_id may name (set by the DAG author: a trigger-time "
            "source_conn_id outside it is refused); unset: any",
            cli=None,
        ),
        _s(
            "allowed_polyv_conn_ids",
            None,
            names,
            "the polyv connections polyv_conn_id may name (set by the DAG author: a trigger-time "
            "polyv_conn_id outside it is refused before the connection is read); unset: any",
            cli=None,
        ),
        _s("report_conn_id", None, text, "connection of the report table (default: the source's)", cli=None),
        _s("report_table", None, text, "warehouse table the report is appended to", cli=None),
        _s("validation_dir", None, text, "where the validation JSON and Data Docs go", cli=None),
        # where trigger-time values may point (a DAG's params are anyone-who-may-trigger's input)
        _s(
            "report_dir",
            None,
            text,
            "the folder reports go to; report_path is then a name ending in .parquet, resolved under "
            "<report_dir>/<dag_id>/ (no absolute path, no '..'; an existing name is refused)",
            cli=None,
        ),
        _s(
            "allowed_input_prefixes",
            None,
            parse_prefixes,
            "input_path must lie under one of these paths or URLs (a list, or its JSON text)",
            cli=None,
        ),
        _s(
            "allowed_suite_prefixes",
            None,
            parse_prefixes,
            "expectation_suite_path must lie under one of these paths (a list, or its JSON text)",
            cli=None,
        ),
        # columns
        _s(
            "viewer_id_column",
            VIEWER_ID,
            text,
            "column holding the viewerId",
            target="mapping.viewer_id_column",
            templated=False,
        ),
        _s(
            "field_id_column",
            FIELD_ID,
            text,
            "long form: column holding customFieldId",
            target="mapping.field_id_column",
            templated=False,
        ),
        _s(
            "value_column",
            VALUE,
            text,
            "long form: column holding customFieldValue",
            target="mapping.value_column",
            templated=False,
        ),
        _s(
            "fields",
            None,
            field_map,
            "wide form: send COLUMN as customFieldId FIELD_ID (repeatable)",
            cli="--field",
            target="mapping.fields",
            templated=False,
        ),
        # sending
        _s(
            "batch_size",
            SendOptions.batch_size,
            integer,
            "items per request (max 1000)",
            extra="batch_size",
            target="send.batch_size",
            templated=False,
        ),
        _s(
            "concurrency",
            SendOptions.concurrency,
            integer,
            "requests in flight",
            extra="concurrency",
            target="send.concurrency",
            templated=False,
        ),
        _s(
            "max_rps",
            None,
            number,
            "a cap on this run's requests per second (default: the budget's rate)",
            extra="max_rps",
            target="send.max_rps",
            templated=False,
        ),
        _s(
            "budget_url",
            None,
            text,
            "where the request budget shared by every run through this IP lives: redis://host:port/db "
            "across hosts (default: machine-wide, a file in POLYV_RUNTIME_DIR or /tmp)",
            cli="--budget",
            env="POLYV_BUDGET_URL",
        ),
        _s("budget_conn_id", None, text, "an Airflow Redis connection holding the budget", cli=None),
        _s(
            "budget_rps",
            DEFAULT_BUDGET_RPS,
            number,
            f"the egress IP's total requests per second for POLYV, at most {MAX_RPS_CEILING:g} "
            "(POLYV blocks an IP past 1500 per 10 s); runs on one budget share it fairly",
            env="POLYV_BUDGET_RPS",
        ),
        _s(
            "max_attempts",
            SendOptions.max_attempts,
            integer,
            "tries per request on transient errors",
            target="send.max_attempts",
            templated=False,
        ),
        _s(
            "timeout",
            SendOptions.timeout_s,
            number,
            "seconds to wait for an answer",
            extra="timeout",
            target="send.timeout_s",
            templated=False,
        ),
        _s(
            "signature_method",
            SendOptions.signature_method,
            signature_method,
            "MD5 or SHA256",
            target="send.signature_method",
            operator=False,  # the operator never took it: a CLI-only setting
        ),
        _s(
            "check_fields",
            True,
            flag,
            "preflight the customFieldIds against the account's field list (GET custom-field/list), "
            "rejecting the items that name a field the account does not have",
            cli="--no-check-fields",
            target="sync.check_fields",
            templated=False,
            flag_help="skip the preflight of the customFieldIds against the account's field list "
            "(one request fewer; items naming a field the account lacks are sent, not rejected first)",
        ),
        # the run
        _s("dry_run", False, flag, "plan and report, send nothing, touch no state", target="sync.dry_run"),
        _s(
            "full_refresh",
            False,
            flag,
            "ignore the state and send everything (the state is refreshed)",
            target="sync.full_refresh",
        ),
        _s(
            "state_dir",
            None,
            text,
            "keep the sync state here; unchanged items are not resent",
            target="sync.state_dir",
        ),
        _s(
            "state_table",
            "polyv_sync_state",
            text,
            "warehouse table of the sync state (used without state_dir, on state_conn_id, else "
            "report_conn_id, else source_conn_id); empty keeps no state",
            cli=None,
            blank_is_off=True,
        ),
        _s(
            "state_conn_id",
            None,
            text,
            "connection of the state table (default: report_conn_id, else the source's)",
            cli=None,
        ),
        _s(
            "diff_in_warehouse",
            False,
            flag,
            "compute the diff against the state table in the warehouse: only changed rows leave it "
            "(long form; PostgreSQL, MySQL/MariaDB, DuckDB)",
            cli=None,
        ),
        _s(
            "reset_corrupt_state",
            False,
            flag,
            "if the state is corrupt or from another fingerprint version, start over",
            cli="--reset-state",
            target="sync.reset_corrupt_state",
            templated=False,
        ),
        _s(
            "expectation_suite_path",
            None,
            text,
            "Great Expectations suite (JSON) to validate the items with; 'default' for the bundled one",
            cli="--expectations",
            target="spec.suite_path",
        ),
        _s(
            "max_rejected_fraction",
            None,
            fraction,
            "a gate: send nothing if a larger share of the items is rejected (default "
            f"{DEFAULT_SUITE_MAX_REJECTED} with a suite, no ceiling otherwise)",
            target="sync.max_rejected_fraction",
        ),
        _s(
            "lock_timeout",
            SyncOptions.lock_timeout_s,
            number,
            "seconds to wait while another run holds the sync state, then exit 5 (busy)",
            target="sync.lock_timeout_s",
        ),
        _s(
            "read_batch_rows",
            SyncOptions.read_batch_rows,
            integer,
            "rows read per chunk",
            target="sync.read_batch_rows",
            templated=False,
        ),
        _s(
            "partitions",
            SyncOptions.partitions,
            integer,
            f"split the account into N slices by viewerId (1-{MAX_PARTITIONS}); "
            "run each slice with its own --partition, at the same time if you like",
            target="sync.partitions",
        ),
        _s(
            "partition",
            SyncOptions.partition,
            integer,
            "the slice this run handles, 0 to N-1 (with --partitions)",
            target="sync.partition",
        ),
        # the record of runs: which report rows, the runs table, retention, waiting
        _s(
            "report_rows",
            DEFAULT_REPORT_ROWS,
            check_report_rows,
            "which report rows are written: all (one per input item) or changes (every item except "
            "the unchanged ones, which are only counted)",
            target="sync.report_rows",
        ),
        _s(
            "runs_table",
            None,
            text,
            "warehouse table of one row per run, written when the run starts and completed when it "
            f"ends (default: <report_table>{RUNS_SUFFIX}; with report_table only)",
            cli=None,
        ),
        _s(
            "report_retention_days",
            None,
            retention_days,
            "delete the report rows (and this DAG's report files) of runs started more than this many "
            "days ago, at the end of each run, in small batches (unset: keep everything)",
            cli=None,
        ),
        _s(
            "runs_retention_days",
            None,
            retention_days,
            "delete the runs table's rows of runs started more than this many days ago (unset: keep them)",
            cli=None,
        ),
        _s(
            "report_day_partitions",
            False,
            flag,
            "PostgreSQL: create a new report table partitioned by day, so retention drops whole days",
            cli=None,
            templated=False,
        ),
        _s(
            "deferrable",
            None,
            optional_flag,
            "wait for another run's sync state (or a recorded budget block) in the triggerer, freeing "
            "the worker (default: Airflow's [operators] default_deferrable)",
            cli=None,
            templated=False,
        ),
        _s("seed", None, integer, "seed of the retry jitter (tests)", operator=False),
    )
}

DEFAULTS: dict[str, Any] = {k: s.default for k, s in SETTINGS.items()}
#: The settings the Airflow operator takes as arguments, in the table's order.
OPERATOR_SETTINGS: tuple[str, ...] = tuple(k for k, s in SETTINGS.items() if s.operator)


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
        if parsed is None and setting.blank_is_off:
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
