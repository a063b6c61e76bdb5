"""Every setting of a run, in one table: its default, how its value is parsed, its help text and
its name in each front end (the CLI flag, the operator argument, the connection extra, the
environment variable) and the field it fills (``target``).

:mod:`polyv_connector.runspec` resolves what a front end was given against this table; nothing
here does I/O or imports anything heavy (DAG files import it at parse time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from polyv_connector import deployment as dep
from polyv_connector.config import SendOptions, SyncOptions
from polyv_connector.model import DEFAULT_BUDGET_RPS, FIELD_ID, MAX_RPS_CEILING, RUNS_SUFFIX, VALUE, VIEWER_ID
from polyv_connector.parsers import (
    Parser,
    field_map,
    flag,
    fraction,
    integer,
    limit_fraction,
    names,
    null_values,
    number,
    optional_flag,
    parameters,
    parse_prefixes,
    retention_days,
    run_mode,
    signature_method,
    text,
)
from polyv_connector.partitioning import MAX_PARTITIONS
from polyv_connector.report_rows import DEFAULT_REPORT_ROWS, check_report_rows

Front = Literal["cli", "operator"]

#: The default share of rejected items above which a run with a suite sends nothing.
DEFAULT_SUITE_MAX_REJECTED = 0.05
#: The suite name that means "the suite bundled with the package".
BUNDLED_SUITE = "default"


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
    # The word "none" switches the feature off (when the parser reads it as None), although the
    # default is on; blank still means the default.
    none_is_off: bool = False
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
        # change limits (docs/limits.md)
        _s(
            "max_changed_fraction",
            SyncOptions.max_changed_fraction,
            limit_fraction,
            "a limit: send nothing (exit 4) if the planned changes (new keys, changed values, clears) exceed "
            "this share of the items the state knew after the last completed run (may exceed 1; none: off)",
            target="sync.max_changed_fraction",
            extra="max_changed_fraction",
            env=dep.ENV_MAX_CHANGED_FRACTION,
            none_is_off=True,
        ),
        _s(
            "change_limit_min_items",
            SyncOptions.change_limit_min_items,
            integer,
            "max_changed_fraction applies once the state knows at least this many items (of the account, "
            "or of the slice)",
            target="sync.change_limit_min_items",
            extra="change_limit_min_items",
            env=dep.ENV_CHANGE_LIMIT_MIN_ITEMS,
        ),
        _s(
            "max_source_shrink",
            SyncOptions.max_source_shrink,
            fraction,
            "a limit of whole-source runs: send nothing (exit 4) if the source has fewer distinct keys than "
            "(1 - this) times the last whole-source run's (0 to 1; none: off)",
            target="sync.max_source_shrink",
            extra="max_source_shrink",
            env=dep.ENV_MAX_SOURCE_SHRINK,
            none_is_off=True,
        ),
        _s(
            "whole_source",
            SyncOptions.whole_source,
            flag,
            "this run reads the account's whole source (not a delta or a window): check the shrink, count "
            "the keys the source no longer has (removed) and keep the baseline",
            target="sync.whole_source",
        ),
        _s(
            "null_values",
            SyncOptions.null_values,
            null_values,
            "what a NULL value means: reject (the item is rejected) or clear (sends an empty value)",
            target="sync.null_values",
            extra="null_values",
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
        # plan, then apply exactly the plan
        _s(
            "mode",
            "run",
            run_mode,
            "run: read, diff and send; plan: write what a run would send to plan_path (signed; nothing "
            "sent, no state moved; a change-limit breach is recorded, not a failure); apply: send exactly "
            "the plan at plan_path (refused if altered, another account's, or made before another run "
            "changed the state). The CLI's subcommands run, plan and apply",
            cli=None,
        ),
        _s(
            "plan_path",
            None,
            text,
            "the plan file (.parquet) mode=plan writes and mode=apply reads; with report_dir, a name "
            "in the DAG's report folder (on Celery: shared storage both tasks reach)",
            cli=None,
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
