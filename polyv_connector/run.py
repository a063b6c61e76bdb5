"""A run prepared at the edge: everything the engine works with, built once, before it starts.

The CLI and the Airflow operator turn their settings (a :class:`~polyv_connector.runspec.RunSpec`)
into the run's parts with :func:`prepare`: the source, the state table, the validator, the report
sinks, where the run page and the validation results go, and whether the diff runs in the
warehouse or here (chosen once, as a value). What differs between the two front ends comes in
as a :class:`Front`: how a setting is named in messages, how a database connection is reached
(the operator's Airflow hooks), the home of their default folders.

:func:`sync` (the library's entry, also what both front ends call) then assembles the engine's
:class:`~polyv_connector.engine.sync.Run` (:func:`assemble`): the POLYV client and its token
bucket, the retry policy, the folder state, the folder a report goes to when its sink fails
(each front end passes its own, see :func:`default_report_fallback_dir`), and executes it. The
engine builds nothing itself.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from polyv_connector.config import Credentials, SendOptions, SyncOptions
from polyv_connector.errors import ConfigError

if TYPE_CHECKING:
    from polyv_connector.engine.plan import PlanSink, Source, Validator
    from polyv_connector.engine.result import SyncResult
    from polyv_connector.engine.sync import Run
    from polyv_connector.progress import Progress
    from polyv_connector.report import ReportSink
    from polyv_connector.runspec import RunSpec
    from polyv_connector.sender import Circuit
    from polyv_connector.state.store import StateStore
    from polyv_connector.transport.client import PolyvClient
    from polyv_connector.transport.ratelimit import RequestBudget


log = logging.getLogger("polyv_connector")

#: Where the diff against the state runs: here over the loaded state, or in the warehouse (the
#: source's SQL joins the state table, and only changed rows reach the engine).
Diff = Literal["local", "warehouse"]


def _plain(key: str) -> str:
    return key


@dataclass(frozen=True)
class Front:
    """What a front end (the CLI, the operator) brings to a run's preparation.

    :param label: how a message names a setting (the CLI: its flag; the operator: the argument).
    :param db_hook: ``(conn_id, setting) -> DbApiHook``, to reach a database connection (the
        operator's Airflow connections); None where there are none (the CLI).
    :param same_database: whether two connection ids reach the same database.
    :param home: the folder under which run pages and validation results go when the settings
        name none (the operator: Airflow's home).
    :param dag_id: with ``run_id``, ``task_id`` and ``map_index``: the names of those files.
    :param report_folder: the folder a table-only report's run page goes to (the operator: the
        DAG's own report folder, which the plugin serves to that DAG's readers); None:
        ``<report_dir or <home>/polyv_reports>/<dag_id>``.
    :param duckdb_external_access: the DAG author's opt-out of a DuckDB source's confinement
        (never a run setting: no trigger can turn it on).
    """

    label: Callable[[str], str] = _plain
    db_hook: Callable[[str, str], Any] | None = None
    same_database: Callable[[str | None, str | None], bool] | None = None
    home: str = ""
    dag_id: str = "dag"
    run_id: str = "run"
    task_id: str = "task"
    map_index: int = -1
    report_folder: str | None = None
    duckdb_external_access: bool = False

    def hook(self, conn_id: str, setting: str) -> Any:
        if self.db_hook is None:
            raise ConfigError(setting, "database connections are available in Airflow only")
        return self.db_hook(conn_id, setting)


@dataclass
class Prepared:
    """A run's parts, made by :func:`prepare` before anything is sent."""

    source: Source
    report: ReportSink
    diff: Diff
    validator: Validator | None = None
    state: StateStore | None = None
    #: What the run reads and writes, for lineage (also given to :func:`prepare` to fill as it goes).
    facts: dict[str, Any] = field(default_factory=dict)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def validation_dir(spec: RunSpec, front: Front) -> str | None:
    """Where the validation JSON and Data Docs go: next to the Parquet report, else under
    ``validation_dir``, else ``<home>/polyv_validation/<dag>/<run>/``."""
    if spec.report_path:
        return spec.report_path
    if spec.validation_dir:
        return spec.validation_dir
    return os.path.join(front.home, "polyv_validation", _safe_name(front.dag_id), f"{_safe_name(front.run_id)}.parquet")


def run_page_path(spec: RunSpec, front: Front) -> str:
    """Next to the Parquet report (``run.parquet`` -> ``run.html``); for a table-only report,
    ``<front.report_folder>/<run>__<task>[_<map index>].html``, by default
    ``<report_dir or <home>/polyv_reports>/<dag_id>/`` (the plugin's default folder)."""
    from polyv_connector.runpage import page_path_for

    if spec.report_path:
        return page_path_for(spec.report_path)
    folder = front.report_folder or os.path.join(
        spec.report_dir or os.path.join(front.home, "polyv_reports"), _safe_name(front.dag_id)
    )
    # One page per task instance: a DAG may run several syncs (mapped partitions, tasks).
    name = f"{_safe_name(front.run_id)}__{_safe_name(front.task_id)}" + (
        f"_{front.map_index}" if front.map_index >= 0 else ""
    )
    return os.path.join(folder, f"{name}.html")


def check_source(spec: RunSpec, front: Front) -> None:
    """Exactly one source, and a query that is one read-only query, before any connection is
    opened (the state and report tables are created before the source is read)."""
    if bool(spec.input_path) == bool(spec.source_conn_id):
        raise ConfigError(
            "input_path",
            "give exactly one source: input_path (Parquet) or source_conn_id with source_sql or source_table",
        )
    if spec.source_conn_id and bool(spec.source_sql) == bool(spec.source_table):
        raise ConfigError("source_sql", "with source_conn_id give exactly one of source_sql and source_table")
    if spec.source_conn_id and spec.source_sql:
        from polyv_connector.warehouse import dbapi, readonly

        # Reading the connection's definition opens nothing; its dialect decides the parse.
        dialect = dbapi.resolve(front.hook(spec.source_conn_id, "source_conn_id")).dialect
        readonly.check_read_query(spec.source_sql, readonly.sqlglot_dialect(dialect), "source_sql")


def check_outputs(spec: RunSpec, front: Front) -> None:
    """Every folder the run writes to, checked before the first request (the report's own
    checks run when its sink is made, also before any request)."""
    from polyv_connector.paths import check_output_dir, is_url

    if spec.options.state_dir:
        check_output_dir(spec.options.state_dir, "state_dir")
    if spec.suite_path:
        where = validation_dir(spec, front)
        if where and not is_url(where):
            folder = Path(where).parent if Path(where).suffix else Path(where)
            check_output_dir(str(folder), "report_path" if spec.report_path else "validation_dir")


def choose_diff(spec: RunSpec, front: Front) -> Diff:
    """Where the diff against the state runs (checked before anything runs)."""
    if not spec.diff_in_warehouse or spec.options.full_refresh:
        return "local"
    same = front.same_database
    if (
        spec.options.state_dir
        or not spec.state_table
        or not spec.source_conn_id
        or same is None
        or not same(spec.state_conn, spec.source_conn_id)
    ):
        raise ConfigError(
            "diff_in_warehouse",
            "needs a SQL source and the state table in the source's database "
            "(state_table; state_conn_id unset, equal to source_conn_id, or another role "
            "on the same host, port and database; no state_dir)",
        )
    if spec.options.mapping.is_wide:
        raise ConfigError("diff_in_warehouse", "works with the long form only (no fields=...)")
    return "warehouse"


def make_state_table(spec: RunSpec, app_id: str, diff: Diff, front: Front, facts: dict[str, Any]) -> StateStore | None:
    """The warehouse state table, when there is no state_dir and a connection to keep it on
    (the folder state of ``state_dir`` is made by :func:`assemble`)."""
    conn_id = spec.state_conn
    if spec.options.state_dir:
        facts["state_dir"] = spec.options.state_dir
        if spec.state_table:
            log.info("sync state: the folder %s (state_dir wins over state_table)", spec.options.state_dir)
    if spec.options.state_dir or not spec.state_table or not conn_id:
        return None
    from polyv_connector.state.table import SqlStateTable

    state_hook = front.hook(conn_id, "state_conn_id")
    facts.update(state_hook=state_hook, state_table=spec.state_table)
    table = SqlStateTable(
        state_hook,
        spec.state_table,
        app_id,
        create=not spec.options.dry_run,
        load_for_local_diff=diff == "local",
    )
    table.null_is_empty = spec.options.null_values == "clear"
    return table


def make_source(spec: RunSpec, front: Front, facts: dict[str, Any], skip_unchanged: Any = None) -> Source:
    """The rows' source; ``skip_unchanged`` is the state table when the diff runs in SQL."""
    input_path, sql, table = spec.input_path, spec.source_sql, spec.source_table
    if input_path:
        from polyv_connector.sources.parquet import ParquetSource

        facts.update(source_kind="file", source_path=input_path, source_desc=input_path)
        return ParquetSource(input_path, setting=front.label("input_path"))
    from polyv_connector.sources.sql import SqlSource

    db_hook = front.hook(spec.source_conn_id or "", "source_conn_id")
    facts.update(
        source_kind="sql",
        source_hook=db_hook,
        source_sql=sql,
        source_table=table,
        source_desc=f"{table or 'query'} (connection {spec.source_conn_id})",
    )
    return SqlSource(
        db_hook,
        sql=sql,
        table=table,
        parameters=spec.source_parameters,
        setting="source_sql" if sql else "source_table",
        skip_unchanged=skip_unchanged,
        duckdb_external_access=front.duckdb_external_access,
    )


def make_validator(spec: RunSpec, front: Front) -> Validator | None:
    """The expectation suite's validator, if the run has a suite."""
    if not spec.suite_path:
        return None
    # Great Expectations takes seconds to import: only runs that use a suite pay for it.
    from polyv_connector.expectations import SuiteValidator

    # The validation result JSON and Data Docs go next to the Parquet report, if any.
    return SuiteValidator.from_file(
        spec.suite_path, report_dir=validation_dir(spec, front), setting=front.label("expectation_suite_path")
    )


def make_report(spec: RunSpec, front: Front, facts: dict[str, Any]) -> ReportSink:
    """The report sinks: the Parquet file and/or the warehouse table (created and checked now,
    before anything is sent, so a permission problem fails early)."""
    from polyv_connector.report import MultiReport, ParquetReport

    path, table = spec.report_path, spec.report_table
    if not path and not table:
        raise ConfigError(
            "report_path", "give report_path (Parquet) and/or report_table: every run leaves a per-item report"
        )
    sinks: list[ReportSink] = []
    if table:
        conn_id = spec.table_conn_id
        if not conn_id:
            raise ConfigError("report_conn_id", "report_table needs report_conn_id (or a source_conn_id to default to)")
        from polyv_connector.warehouse.report_table import SqlReportTable

        db_hook = front.hook(conn_id, "report_conn_id")
        sinks.append(
            SqlReportTable(
                db_hook,
                table,
                location=f"{table} (connection {conn_id})",
                day_partitions=spec.report_day_partitions,
            )
        )
        facts.update(report_hook=db_hook, report_table=table, report_conn_id=conn_id)
    if path:
        sinks.append(ParquetReport(path, setting=front.label("report_path"), input_path=spec.input_path))
        facts["report_path"] = path
    return sinks[0] if len(sinks) == 1 else MultiReport(sinks)


def prepare(
    spec: RunSpec,
    credentials: Credentials,
    front: Front,
    *,
    facts: dict[str, Any] | None = None,
    check_columns: bool = False,
) -> Prepared:
    """Build the run's parts from its settings, in the order that fails cheapest first: where the
    diff runs, the state table, the source, the validator, the report sinks.

    ``facts`` (e.g. the operator's lineage) is filled as each part is made, so a failure still
    leaves what was known. ``check_columns``: check the source's columns before any report sink
    is made (the CLI does; the engine checks them again under the state's lock).
    """
    facts = facts if facts is not None else {}
    diff = choose_diff(spec, front)  # checked before any connection is opened
    state = make_state_table(spec, credentials.app_id, diff, front, facts)
    src = make_source(spec, front, facts, skip_unchanged=state if diff == "warehouse" else None)
    checks = make_validator(spec, front)
    if check_columns:
        src.check_columns(spec.options.mapping)
    sinks = make_report(spec, front, facts)
    return Prepared(source=src, report=sinks, diff=diff, validator=checks, state=state, facts=facts)


def default_report_fallback_dir() -> Path:
    """Where a report goes when its sink fails, as the CLI, the operator and :func:`sync` had it:
    ``$AIRFLOW_HOME/polyv_reports``, else ``polyv_reports`` in the temp directory."""
    home = os.environ.get("AIRFLOW_HOME", "").strip()
    return Path(home or tempfile.gettempdir()) / "polyv_reports"


def assemble(
    source: Source,
    credentials: Credentials,
    options: SyncOptions,
    report: ReportSink | None,
    *,
    validator: Validator | None = None,
    state: StateStore | None = None,
    client: PolyvClient,
    report_fallback_dir: str | os.PathLike[str],
    plan: PlanSink | None = None,
) -> Run:
    """The engine's :class:`~polyv_connector.engine.sync.Run`: the folder state made from
    ``options.state_dir`` when no ``state`` is given, the retry policy from the send options."""
    from polyv_connector.engine.sync import Run
    from polyv_connector.transport.retry import RetryPolicy

    if state is None and options.state_dir:
        from polyv_connector.state.folder import SyncState

        state = SyncState(options.state_dir, credentials.app_id, implicit_lock=False)
    return Run(
        source=source,
        app_id=credentials.app_id,
        options=options,
        report=report,
        client=client,
        retry=RetryPolicy.of(options.send),
        report_fallback_dir=Path(report_fallback_dir),
        validator=validator,
        state=state,
        plan=plan,
    )


def new_client(
    credentials: Credentials,
    send: SendOptions,
    budget: RequestBudget | None,
    clock: Callable[[], float] = time.time,
) -> PolyvClient:
    """A POLYV client drawing on ``budget`` (default: a token bucket at ``max_rps``): a run's own,
    or the one an Airflow hook pools for its task (the one place a client is built)."""
    from polyv_connector.transport.client import PolyvClient
    from polyv_connector.transport.ratelimit import TokenBucket

    return PolyvClient(credentials, send, budget=budget or TokenBucket(send.max_rps), clock=clock)


def sync(
    source: Source,
    credentials: Credentials,
    options: SyncOptions,
    report: ReportSink | None,
    *,
    validator: Validator | None = None,
    state: StateStore | None = None,
    budget: RequestBudget | None = None,
    progress: Progress | None = None,
    run_id: str | None = None,
    client: PolyvClient | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    seed: int | None = None,
    stop: Circuit | None = None,
    report_fallback_dir: str | os.PathLike[str] | None = None,
    plan: PlanSink | None = None,
) -> SyncResult:
    """Run one sync and write its report. Returns the result; never raises for row problems.

    ``state`` keeps confirmed fingerprints between runs (default: a folder state under
    ``options.state_dir``, or none). Raises :class:`ConfigError`/:class:`InputError` (before
    any save request) for bad settings or input, and :class:`StateError` for an
    untrustworthy state. ``client`` is the POLYV client to use (e.g. an Airflow hook's); by
    default the run makes its own and closes it. Whatever the run raises, the report it had
    started is dropped (``report.abort()``): a partial report never stands. A run that POLYV refuses
    (credentials, clock, IP block) or that a gate stops still writes its report and returns a
    result whose ``aborted`` / ``gate_failures`` say why (``exit_code`` non-zero).

    ``stop`` lets another thread or a signal handler stop the run (:meth:`Circuit.stop`): no
    new request leaves, requests in flight get a few seconds to answer (the rest are reported
    ``in_doubt``), the report is written and the result says ``aborted`` with cause
    ``stopped``. An exception raised while sending (``KeyboardInterrupt``, Airflow's task
    timeout) is treated the same way, then re-raised once the report is written;
    :func:`~polyv_connector.engine.result.interrupted_result` gives the result it carries.

    When ``report`` cannot be written (a warehouse error at write or commit), the whole report
    goes to a Parquet file under ``report_fallback_dir`` (default: :func:`default_report_fallback_dir`)
    and the result names it (``reportFallback``).

    ``plan`` receives the items the run would send, with their kinds, before anything is sent
    (``polyv-sync plan``, with ``options.dry_run``; see :mod:`polyv_connector.plans`).
    """
    from polyv_connector.engine.context import RunContext
    from polyv_connector.engine.result import new_run_id
    from polyv_connector.engine.sync import execute
    from polyv_connector.progress import Progress
    from polyv_connector.sender import Circuit

    own_client = client is None
    try:
        options.validate()
        credentials.validate()
        ctx = RunContext(
            run_id=run_id or new_run_id(clock),
            clock=clock,
            sleep=sleep,
            seed=seed,
            stop=stop if stop is not None else Circuit(),
            progress=progress or Progress(),
        )
        if client is None:
            client = new_client(credentials, options.send, budget, clock)
        run = assemble(
            source,
            credentials,
            options,
            report,
            validator=validator,
            state=state,
            client=client,
            report_fallback_dir=(
                report_fallback_dir if report_fallback_dir is not None else default_report_fallback_dir()
            ),
            plan=plan,
        )
    except BaseException:
        # As the engine does for whatever a run raises: no partial report stands.
        if report is not None:
            report.abort()
        if own_client and client is not None:
            client.close()
        raise
    try:
        return execute(run, ctx)
    finally:
        if own_client:
            client.close()
