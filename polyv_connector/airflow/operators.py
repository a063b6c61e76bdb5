"""``PolyvViewerFieldSyncOperator``: one sync run as an Airflow task, thin glue over the library.

``__init__`` only stores arguments; ``execute`` builds the source, the report sinks and the
options, calls :func:`polyv_connector.sync` (the same function the CLI calls) and turns
its result into an XCom summary, asset events and, when rows were not synced, a failed task.

Parse-time cost matters (the scheduler re-parses DAG files constantly): this module imports
neither pyarrow, pandas nor Great Expectations; ``execute`` imports them when a task runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import Asset, AssetAlias, BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from polyv_connector import exit_codes
from polyv_connector.airflow.assets import (
    input_asset,
    report_file_asset,
    report_table_asset,
    sync_alias,
    sync_report_asset,
)
from polyv_connector.airflow.hooks import PolyvHook
from polyv_connector.airflow.links import DataDocsLink, ReportLink, RunPageLink
from polyv_connector.errors import ConfigError, InputError, PolyvConnectorError, StateError
from polyv_connector.jsonsafe import strict_json
from polyv_connector.model import FIELD_ID, VALUE, VIEWER_ID
from polyv_connector.paths import check_output_dir, confine, is_url
from polyv_connector.run import Front, check_source, prepare, run_page_path, validation_dir

if TYPE_CHECKING:
    from airflow.sdk import Context

    from polyv_connector.airflow.assets import Location
    from polyv_connector.airflow.lineage import RunLineage
    from polyv_connector.engine.result import SyncResult
    from polyv_connector.runspec import RunSpec
    from polyv_connector.sender import Circuit


class PolyvViewerFieldSyncOperator(BaseOperator):
    """Sync viewer custom-field values into POLYV from a SQL warehouse or Parquet input.

    **Source** (exactly one): ``input_path`` (Parquet file, directory or URL), or
    ``source_conn_id`` (any connection whose hook is a common-sql ``DbApiHook``) with
    ``source_sql`` or ``source_table``. SQL is read in chunks through a server-side cursor
    where the driver has one (PostgreSQL), never as a whole result.

    **Columns**: long form (default) reads ``viewer_id_column``, ``field_id_column`` and
    ``value_column``; wide form (``fields={"PAY_STATUS": "pay_status", ...}``) sends each mapped
    column as that customFieldId. Names match case-insensitively when unambiguous.

    **Report** (at least one): ``report_path`` (Parquet) and/or ``report_table`` on
    ``report_conn_id`` (default: the source connection), created if absent, appended per run.

    **Result**: returns a strict-JSON summary (counts per status and per reason code, the first
    problem items, requests, duration, report location, runId) as XCom; it is pushed too when
    the task fails. After the report is written, a run with items ``failed``, ``in_doubt`` or
    ``not_attempted`` fails the task: ``AirflowFailException`` (no retry) when a rerun cannot
    help (a failed data-quality gate, POLYV refusing the credentials, the URL or every failed
    value), a retryable ``AirflowException`` otherwise (a block, timeouts, a stop); see
    :func:`polyv_connector.exit_codes.failure_is_retryable`. An invalid setting is
    ``AirflowFailException`` before anything is sent. Metrics go through Airflow's ``Stats``
    (:mod:`polyv_connector.airflow.metrics`).

    :param polyv_conn_id: the ``polyv`` connection (appId, appSecret, base URL, sending extras).
    :param dry_run: plan and report, send nothing. Templated; "true"/"false" strings accepted.
    :param full_refresh: ignore the sync state and send every valid item. Templated.
    :param state_dir: folder of the sync state (unchanged items are not resent); templated.
    :param state_table: warehouse table of the sync state (default ``polyv_sync_state``), used
        when there is no ``state_dir`` and a database connection: ``state_conn_id``, else
        ``report_conn_id``, else ``source_conn_id``. ``None`` or "" keeps no state.
    :param diff_in_warehouse: with a SQL source and the state table on the source connection,
        compute the diff in the database (an anti-join against the state table) so that only
        changed rows leave the warehouse. Unchanged rows are then counted in the summary
        (``unchangedInWarehouse``) instead of listed in the report. Needs ``md5()``, ``CAST(... AS TEXT)``
        and window functions (tested on PostgreSQL) and the long form.
    :param expectation_suite_path: Great Expectations suite (JSON) validating the items;
        ``default`` for the suite bundled with the package. The validation JSON and Data Docs
        go next to ``report_path``, else into ``validation_dir``, else under
        ``$AIRFLOW_HOME/polyv_validation/<dag_id>/``.
    :param max_rejected_fraction: stop (send nothing) if a larger share of the items is
        rejected; default 0.05 with a suite, no ceiling otherwise.
    :param check_fields: preflight the account's custom field list, rejecting unknown ids.
    :param max_rps, batch_size, concurrency, timeout, max_attempts: override the connection's
        sending defaults for this task.
    :param budget_url, budget_conn_id, budget_rps: the request budget shared by every sync
        through this worker's IP: a ``redis://`` URL or an Airflow Redis connection (shared
        across hosts), else ``POLYV_BUDGET_URL``, else machine-wide; its total rate, else
        ``POLYV_BUDGET_RPS``, else 100/s. ``max_rps`` caps this task within it.
    :param lock_timeout: seconds to wait while another run holds this account's sync state
        (default 0: fail at once as busy, a retryable error). Templated.
    :param source_parameters: bound parameters of ``source_sql`` (the driver's paramstyle).
    :param allowed_source_conn_ids: the connections ``source_conn_id`` may name; any other is a
        configuration error before a connection is looked up. For DAGs that take the source
        connection at trigger time; templated (a JSON list, a list, or comma-separated names).
        ``None``: any connection.
    :param allowed_polyv_conn_ids: the same for ``polyv_conn_id`` (checked before the connection
        is read), for DAGs that take the POLYV account at trigger time or map over accounts.

    ``source_sql`` must be one read-only query (checked with a SQL parser before any connection
    is opened), and is read inside a read-only transaction where the database has one: see
    :mod:`polyv_connector.warehouse.readonly`.
    """

    template_fields: Sequence[str] = (
        "input_path",
        "source_conn_id",
        "source_sql",
        "source_table",
        "source_parameters",
        "allowed_source_conn_ids",
        "allowed_polyv_conn_ids",
        "report_path",
        "report_conn_id",
        "report_table",
        "state_dir",
        "state_table",
        "state_conn_id",
        "diff_in_warehouse",
        "expectation_suite_path",
        "validation_dir",
        "report_dir",
        "allowed_input_prefixes",
        "allowed_suite_prefixes",
        "dry_run_setting",
        "full_refresh",
        "max_rejected_fraction",
        "lock_timeout",
        "budget_url",
        "budget_conn_id",
        "budget_rps",
        "partitions",
        "partition",
    )
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"source_sql": "sql", "source_parameters": "json"}
    ui_color = "#e8f4ff"
    # Served by the plugin (polyv_connector.airflow.plugin); Airflow stores each link as an XCom
    # when the task ends, read from the summary's runPage / reportPath / validation.
    operator_extra_links = (RunPageLink(), ReportLink(), DataDocsLink())

    def __init__(
        self,
        *,
        polyv_conn_id: str = PolyvHook.default_conn_name,
        input_path: str | None = None,
        source_conn_id: str | None = None,
        source_sql: str | None = None,
        source_table: str | None = None,
        source_parameters: Sequence[Any] | Mapping[str, Any] | None = None,
        allowed_source_conn_ids: Sequence[str] | str | None = None,
        allowed_polyv_conn_ids: Sequence[str] | str | None = None,
        viewer_id_column: str = VIEWER_ID,
        field_id_column: str = FIELD_ID,
        value_column: str = VALUE,
        fields: Mapping[str, str] | None = None,
        report_path: str | None = None,
        report_conn_id: str | None = None,
        report_table: str | None = None,
        dry_run: bool | str = False,
        full_refresh: bool | str = False,
        state_dir: str | None = None,
        state_table: str | None = "polyv_sync_state",
        state_conn_id: str | None = None,
        diff_in_warehouse: bool | str = False,
        reset_corrupt_state: bool = False,
        expectation_suite_path: str | None = None,
        validation_dir: str | None = None,
        report_dir: str | None = None,
        allowed_input_prefixes: Sequence[str] | str | None = None,
        allowed_suite_prefixes: Sequence[str] | str | None = None,
        max_rejected_fraction: float | str | None = None,
        check_fields: bool = True,
        max_rps: float | None = None,
        batch_size: int | None = None,
        concurrency: int | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
        read_batch_rows: int | None = None,
        lock_timeout: float | str | None = None,
        budget_url: str | None = None,
        budget_conn_id: str | None = None,
        budget_rps: float | str | None = None,
        partitions: int | str | None = None,
        partition: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        explicit_outlets = "outlets" in kwargs
        explicit_inlets = "inlets" in kwargs
        super().__init__(**kwargs)
        self.polyv_conn_id = polyv_conn_id
        self.input_path = input_path
        self.source_conn_id = source_conn_id
        self.source_sql = source_sql
        self.source_table = source_table
        self.source_parameters = source_parameters
        self.allowed_source_conn_ids = allowed_source_conn_ids
        self.allowed_polyv_conn_ids = allowed_polyv_conn_ids
        self.viewer_id_column = viewer_id_column
        self.field_id_column = field_id_column
        self.value_column = value_column
        self.fields = dict(fields) if fields else None
        self.report_path = report_path
        self.report_conn_id = report_conn_id
        self.report_table = report_table
        # Not ``self.dry_run``: that would hide BaseOperator.dry_run(), Airflow's template check.
        self.dry_run_setting = dry_run
        self.full_refresh = full_refresh
        self.state_dir = state_dir
        self.state_table = state_table
        self.state_conn_id = state_conn_id
        self.diff_in_warehouse = diff_in_warehouse
        self.reset_corrupt_state = reset_corrupt_state
        self.expectation_suite_path = expectation_suite_path
        self.validation_dir = validation_dir
        self.report_dir = report_dir
        self.allowed_input_prefixes = allowed_input_prefixes
        self.allowed_suite_prefixes = allowed_suite_prefixes
        self.max_rejected_fraction = max_rejected_fraction
        self.check_fields = check_fields
        self.max_rps = max_rps
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.read_batch_rows = read_batch_rows
        self.lock_timeout = lock_timeout
        self.budget_url = budget_url
        self.budget_conn_id = budget_conn_id
        self.budget_rps = budget_rps
        # Slice ``partition`` of ``partitions`` (templated; map over range(partitions)).
        self.partitions = partitions
        self.partition = partition
        self._lineage: dict[str, Any] = {}
        self._stop: Circuit | None = None  # set while execute() runs: on_kill() stops through it
        if not explicit_outlets:
            self.outlets = self.default_outlets()
        if not explicit_inlets and input_path and not _templated(input_path):
            located = input_asset(input_path.strip())
            self.inlets = [located] if located else []

    # ---- parse time ---------------------------------------------------------------------------
    def default_outlets(self) -> list[Asset | AssetAlias]:
        """The report's asset(s), from the arguments as written in the DAG file.

        Templated names are unknown at parse time, so a templated report gets the task's own
        report asset instead; each asset event's ``extra`` names the concrete location.
        """
        outlets: list[Asset | AssetAlias] = []
        table_conn = self.report_conn_id or self.source_conn_id
        if self.report_table and table_conn and not _templated(self.report_table, table_conn):
            outlets.append(report_table_asset(table_conn, self.report_table.strip()))
        if self.report_path and not _templated(self.report_path, self.report_dir or ""):
            # With report_dir, report_path is a name under it (checked when the task runs).
            where = os.path.join(self.report_dir.strip(), self.report_path.strip()) if self.report_dir else None
            outlets.append(report_file_asset(where or self.report_path.strip()))
        if self.has_dag():  # type: ignore[no-untyped-call]
            if not outlets and (self.report_table or self.report_path):
                outlets.append(sync_report_asset(self.dag_id, self.task_id))
            # The real locations (known when the task runs) come as events through the alias.
            outlets.append(sync_alias(self.dag_id, self.task_id))
        return outlets

    # ---- run time -----------------------------------------------------------------------------
    def _given(self) -> dict[str, Any]:
        """The operator's arguments as RunSpec settings (``None`` = not given)."""
        return {
            "input_path": self.input_path,
            "source_conn_id": self.source_conn_id,
            "source_sql": self.source_sql,
            "source_table": self.source_table,
            "source_parameters": self.source_parameters,
            "allowed_source_conn_ids": self.allowed_source_conn_ids,
            "allowed_polyv_conn_ids": self.allowed_polyv_conn_ids,
            "viewer_id_column": self.viewer_id_column,
            "field_id_column": self.field_id_column,
            "value_column": self.value_column,
            "fields": self.fields,
            "report_path": self.report_path,
            "report_conn_id": self.report_conn_id,
            "report_table": self.report_table,
            "dry_run": self.dry_run_setting,
            "full_refresh": self.full_refresh,
            "state_dir": self.state_dir,
            # None keeps no state (as documented): say so explicitly, "" is "off" to the RunSpec.
            "state_table": "" if self.state_table is None else self.state_table,
            "state_conn_id": self.state_conn_id,
            "diff_in_warehouse": self.diff_in_warehouse,
            "reset_corrupt_state": self.reset_corrupt_state,
            "expectation_suite_path": self.expectation_suite_path,
            "validation_dir": self.validation_dir,
            "report_dir": self.report_dir,
            "allowed_input_prefixes": self.allowed_input_prefixes,
            "allowed_suite_prefixes": self.allowed_suite_prefixes,
            "max_rejected_fraction": self.max_rejected_fraction,
            "check_fields": self.check_fields,
            "max_rps": self.max_rps,
            "batch_size": self.batch_size,
            "concurrency": self.concurrency,
            "timeout": self.timeout,
            "max_attempts": self.max_attempts,
            "read_batch_rows": self.read_batch_rows,
            "lock_timeout": self.lock_timeout,
            "budget_url": self.budget_url,
            "budget_conn_id": self.budget_conn_id,
            "budget_rps": self.budget_rps,
            "partitions": self.partitions,
            "partition": self.partition,
        }

    def execute(self, context: Context) -> dict[str, Any]:
        # urllib3 logs request URLs at DEBUG; they carry the signature: keep them out of task logs.
        from polyv_connector.transport.redact import install_log_redaction

        install_log_redaction()
        hook = PolyvHook(self.polyv_conn_id)
        try:
            from polyv_connector import runspec

            # Before the connection is read: a trigger-time id reaches only the accounts listed.
            runspec.check_polyv_conn_id(self.polyv_conn_id, self.allowed_polyv_conn_ids)
            credentials = hook.get_credentials()  # masks the secret before anything else
            # Trigger-time paths held to where the DAG author allows, before anything else.
            spec = confine(hook.resolve_run(self._given()))
            # The report table and summary name the Airflow run this sync belongs to.
            spec = _with_airflow_run_id(spec, context.get("run_id"))
            front = self._front(context)
            check_source(spec, front)
            self._lineage.update(
                mapping=spec.options.mapping,
                max_rejected_fraction=spec.options.max_rejected_fraction,
                app_id=credentials.app_id,
                base_url=credentials.base_url,
            )
            self._check_outputs(front, spec)
            prepared = prepare(spec, credentials, front, facts=self._lineage)
            validator, report = prepared.validator, prepared.report
            from polyv_connector.engine.result import new_run_id
            from polyv_connector.run import default_report_fallback_dir, sync

            self.log.info(
                "POLYV sync: appId %s at %s, source %s, report %s%s%s",
                credentials.app_id,
                credentials.base_url,
                self._lineage.get("source_desc"),
                _absolute_location(report.location, spec.report_path),
                " (dry run)" if spec.options.dry_run else "",
                " (full refresh)" if spec.options.full_refresh else "",
            )
            run_id = new_run_id()
            from polyv_connector.sender import Circuit

            # on_kill() may come from another thread (Airflow's SIGTERM handler, or after an
            # execution_timeout): it stops the run through this handle.
            self._stop = Circuit()
            budget_url = _redis_url(spec.budget_conn_id)
            self._warn_if_budget_unshared(budget_url or spec.budget_url)
            with spec.open_budget(credentials.base_url, run_id, url=budget_url) as budget:
                client = hook.get_conn(spec.options.send, budget)
                result = sync(
                    prepared.source,
                    credentials,
                    spec.options,
                    report,
                    validator=validator,
                    state=prepared.state,
                    client=client,
                    run_id=run_id,
                    stop=self._stop,
                    report_fallback_dir=default_report_fallback_dir(),
                )
        except PolyvConnectorError as exc:
            raise _airflow_error(exc) from exc
        except BaseException as exc:
            # execution_timeout (AirflowTaskTimeout) or SIGINT (KeyboardInterrupt) while sending:
            # the engine has written the whole report; say where, then let Airflow fail the task.
            from polyv_connector.engine.result import interrupted_result

            stopped = interrupted_result(exc)
            if stopped is not None:
                self._emit_metrics(stopped, credentials.app_id)
                self.log.warning("%s", stopped.summary_line())
                self.log.warning("report: %s", _absolute_location(stopped.report_location, spec.report_path))
                page = self._write_run_page(stopped, context, spec)
                summary = self._summary(stopped, context, credentials.app_secret.reveal(), spec, page)
                self._lineage["summary"] = summary
                context["ti"].xcom_push(key="return_value", value=summary)
            raise
        finally:
            self._stop = None
            hook.close()

        validation = result.extra.get("validation") or {}
        if validator is not None:
            from polyv_connector.airflow.lineage import expectation_facts

            self._lineage["expectations"] = expectation_facts(validator)
        if validation:
            for label, key in (("validation result", "resultJson"), ("data docs", "dataDocsPage")):
                if validation.get(key):
                    self.log.info("%s: %s", label, validation[key])
        page = self._write_run_page(result, context, spec)
        summary = self._summary(result, context, credentials.app_secret.reveal(), spec, page)
        self._lineage["summary"] = summary
        self.log.info("%s", result.summary_line())
        self.log.info("report: %s", _absolute_location(result.report_location, spec.report_path))
        if page:
            self.log.info("run page: %s", page)
        self._emit_metrics(result, credentials.app_id)
        self._emit_asset_events(context, summary)
        if not result.ok:
            # The return value is lost when a task raises: keep the summary for alerting.
            context["ti"].xcom_push(key="return_value", value=summary)
            # Deterministic failures (a gate, POLYV refusing the credentials or every failed value)
            # fail at once; transient ones (a block, timeouts, a stop) are left to Airflow's retries.
            retryable = exit_codes.failure_is_retryable(result.exit_code, result.abort_cause, result.counts_by_reason)
            failure = AirflowException if retryable else AirflowFailException
            raise failure(_scrub_secret(_failure_message(result), credentials.app_secret.reveal()))
        return summary

    def _warn_if_budget_unshared(self, budget_url: str | None) -> None:
        """Warn when the executor may spread this DAG's tasks over hosts that do not share the
        budget (every task says so: whichever log someone opens shows it)."""
        from airflow.sdk.configuration import conf

        from polyv_connector.budget.hosts import unshared_budget_warning

        warning = unshared_budget_warning(conf.get("core", "executor", fallback="") or "", budget_url)
        if warning:
            self.log.warning("POLYV budget: %s", warning)

    def on_kill(self) -> None:
        """Stop sending at once (Airflow: "mark failed", a worker shutdown, after a timeout).

        No new request leaves; requests in flight get a few seconds, then the report is written
        (the items without an answer are ``in_doubt``). Their keys were marked unconfirmed
        before sending, so a SIGKILL that follows leaves the state consistent.
        """
        stop = getattr(self, "_stop", None)
        if stop is not None:
            self.log.warning("on_kill: stopping the POLYV sync; the report is still written")
            stop.stop("Airflow stopped the task (on_kill)")

    def _check_outputs(self, front: Front, spec: RunSpec) -> None:
        """Every folder the run writes to, checked before the first request (the report's own
        checks run when its sink is made, also before any request)."""
        if spec.options.state_dir:
            check_output_dir(spec.options.state_dir, "state_dir")
        if spec.suite_path:
            where = validation_dir(spec, front)
            if where and not is_url(where):
                from pathlib import Path

                folder = Path(where).parent if Path(where).suffix else Path(where)
                check_output_dir(str(folder), "report_path" if spec.report_path else "validation_dir")

    def _front(self, context: Context) -> Front:
        """What this task brings to the run's preparation: its connections (Airflow hooks), and
        Airflow's home and the task's names for the files the settings do not place."""
        ti = context.get("ti")
        map_index = getattr(ti, "map_index", -1)
        return Front(
            db_hook=_db_hook,
            same_database=_same_database,
            home=os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow"),
            dag_id=self.dag_id if self.has_dag() else "dag",  # type: ignore[no-untyped-call]
            run_id=str(context.get("run_id") or "run"),
            task_id=self.task_id,
            map_index=map_index if isinstance(map_index, int) else -1,
        )

    def _write_run_page(self, result: SyncResult, context: Context, spec: RunSpec) -> str | None:
        """Write the run page; its absolute path, or None when it could not be written (logged:
        the page is a view of the run, never a reason to fail it)."""
        try:
            from polyv_connector.runpage import write_run_page

            return write_run_page(
                result,
                run_page_path(spec, self._front(context)),
                report_path=spec.report_path,
                airflow_run_id=context.get("run_id"),
            )
        except Exception as exc:
            self.log.warning("could not write the run page: %s: %s", type(exc).__name__, exc)
            return None

    def _summary(
        self,
        result: SyncResult,
        context: Context,
        secret: str,
        spec: RunSpec | None = None,
        run_page: str | None = None,
    ) -> dict[str, Any]:
        summary = result.to_dict()
        summary["airflowRunId"] = context.get("run_id")
        # Absolute, so it means the same on every host that reads the XCom (the worker's working
        # folder is nobody's business); None for a table-only report.
        summary["reportPath"] = _absolute_path(spec.report_path) if spec and spec.report_path else None
        summary["runPage"] = run_page
        # Defence in depth: nothing above should ever hold the secret; scrub the strings
        # themselves (not the JSON text, where escaping could hide it).
        scrubbed: dict[str, Any] = _scrub_secret(strict_json(summary), secret)
        json.dumps(scrubbed, ensure_ascii=False, allow_nan=False)  # the XCom contract: fail here
        return scrubbed

    def _emit_metrics(self, result: SyncResult, app_id: str) -> None:
        """``polyv.*`` metrics through Airflow's ``Stats`` (a no-op unless ``[metrics]`` is on)."""
        from polyv_connector.airflow import metrics

        dag_id = self.dag_id if self.has_dag() else ""  # type: ignore[no-untyped-call]
        metrics.emit(result, {"dag_id": dag_id, "task_id": self.task_id, "app_id": app_id})

    def _emit_asset_events(self, context: Context, summary: dict[str, Any]) -> None:
        events = context.get("outlet_events")
        if events is None:
            return
        extra = {k: summary.get(k) for k in ("runId", "ok", "items", "counts", "report", "dryRun")}
        for outlet in self.outlets or []:
            try:
                if isinstance(outlet, Asset):
                    events[outlet].extra.update(extra)
                elif isinstance(outlet, AssetAlias):
                    for located in self._written_locations(summary):
                        events[outlet].add(located.asset(), extra=extra)
            except Exception as exc:  # an event is a nicety, never a reason to fail
                self.log.debug("could not record an asset event for %s: %s", outlet, exc)

    def _written_locations(self, summary: dict[str, Any]) -> list[Location]:
        """Where this run wrote, named as in its OpenLineage events (the same :class:`Location`)."""
        from polyv_connector.airflow.lineage import polyv_written

        run = self._run_lineage()
        written: list[Location] = [r for r in run.reports if hasattr(r, "uri")]
        if run.state is not None and not summary.get("dryRun"):
            written.append(run.state)
        if run.polyv is not None and polyv_written(summary):
            written.append(run.polyv)
        return written

    # ---- lineage ------------------------------------------------------------------------------
    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage inputs (the source, the sync state) and outputs (the report, the state,
        POLYV when something was sent), with the data-quality and run facets: see
        :mod:`polyv_connector.airflow.lineage`. ``None`` without the OpenLineage provider."""
        from polyv_connector.airflow.lineage import operator_lineage

        return operator_lineage(self._run_lineage())

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """As on completion: a failed gate or a stopped run still read its source and wrote its
        report (and POLYV is declared only if something was sent)."""
        return self.get_openlineage_facets_on_complete(task_instance)

    def _run_lineage(self) -> RunLineage:
        """Where this run read and wrote, and what it found, as plain values (no OpenLineage
        import: the asset events use it too)."""
        from polyv_connector.airflow.assets import file_location, polyv_location
        from polyv_connector.airflow.lineage import RunLineage, source_columns

        info = self._lineage
        run = RunLineage(
            summary=info.get("summary"),
            expectations=info.get("expectations") or [],
            max_rejected_fraction=info.get("max_rejected_fraction"),
        )
        if info.get("source_kind") == "file":
            run.source = [file_location(info["source_path"])]
        elif info.get("source_kind") == "sql":
            table = info.get("source_table")
            where = _table_location(info["source_hook"], table) if table else None
            run.source = (
                [where]
                if where
                else _sql_datasets(info["source_hook"], info.get("source_sql") or "", "inputs", self.log)
            )
        mapping = info.get("mapping")
        if mapping is not None:
            run.fields = dict(mapping.fields) or None
            run.columns = source_columns(
                mapping.viewer_id_column, mapping.field_id_column, mapping.value_column, run.fields
            )
        if info.get("state_dir"):
            run.state = file_location(info["state_dir"])
        elif info.get("state_table"):
            run.state = _table_location(info["state_hook"], info["state_table"])
        if info.get("report_table"):
            located = _table_location(info["report_hook"], info["report_table"])
            run.reports.extend([located] if located else [])
        if info.get("report_path"):
            run.reports.append(file_location(info["report_path"]))
        if info.get("app_id"):
            run.polyv = polyv_location(info["base_url"], info["app_id"])
        return run


# ---- helpers -----------------------------------------------------------------------------------
def _with_airflow_run_id(spec: RunSpec, run_id: Any) -> RunSpec:
    import dataclasses

    if not run_id:
        return spec
    return dataclasses.replace(spec, options=dataclasses.replace(spec.options, airflow_run_id=str(run_id)))


def _absolute_path(path: str) -> str:
    return path if is_url(path) else os.path.abspath(path)


def _absolute_location(location: str | None, report_path: str | None) -> str | None:
    """The report's location with the Parquet file's path made absolute."""
    if not location or not report_path or is_url(report_path):
        return location
    from pathlib import Path

    for written in (report_path, str(Path(report_path))):  # ParquetReport names it as a Path
        if written in location:
            return location.replace(written, _absolute_path(report_path), 1)
    return location


def _templated(*values: str) -> bool:
    return any("{{" in v or "{%" in v for v in values)


def _blank_to_none(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value.strip() if isinstance(value, str) else value


def _db_hook(conn_id: str, setting: str) -> Any:
    """The common-sql hook of ``conn_id`` (anything exposing DB-API ``get_conn``)."""
    try:
        hook = BaseHook.get_hook(conn_id)
    except Exception as exc:
        raise ConfigError(setting, f"cannot use connection {conn_id!r}: {type(exc).__name__}: {exc}") from exc
    if not callable(getattr(hook, "get_conn", None)) or not hasattr(hook, "placeholder"):
        raise ConfigError(
            setting,
            f"connection {conn_id!r} ({type(hook).__name__}) is not a SQL database connection (a common-sql DbApiHook)",
        )
    return hook


def _same_database(conn_a: str | None, conn_b: str | None) -> bool:
    """Whether two connections reach the same database (perhaps as different roles): the diff in
    the warehouse reads the state table through the source connection, and writes it through
    the state connection, so both must see the same table."""
    if not conn_a or not conn_b:
        return False
    if conn_a == conn_b:
        return True
    try:
        a, b = BaseHook.get_connection(conn_a), BaseHook.get_connection(conn_b)
    except Exception as exc:
        raise ConfigError("state_conn_id", f"cannot use connection: {type(exc).__name__}") from exc

    def where(conn: Any) -> tuple[Any, ...]:
        return (conn.conn_type, (conn.host or "").lower(), conn.port, conn.schema)

    return where(a) == where(b)


def _redis_url(conn_id: str | None) -> str | None:
    """``redis://[:password@]host:port/db`` from an Airflow Redis connection (None without one)."""
    if not conn_id:
        return None
    from urllib.parse import quote

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:
        raise ConfigError("budget_conn_id", f"cannot use connection {conn_id!r}: {type(exc).__name__}") from exc
    if conn.password:
        from airflow.sdk.log import mask_secret

        mask_secret(conn.password)
    auth = f":{quote(conn.password, safe='')}@" if conn.password else ""
    db = (conn.extra_dejson or {}).get("db", 0)
    return f"redis://{auth}{conn.host or '127.0.0.1'}:{conn.port or 6379}/{db}"


def _airflow_error(exc: PolyvConnectorError) -> Exception:
    """The Airflow exception for an error the run raised: retryable only where a retry can help."""
    code = exit_codes.for_error(exc)
    kinds = {
        exit_codes.CONFIG: "configuration error",
        exit_codes.BUSY: "busy",
        exit_codes.UNAVAILABLE: "unavailable, will retry",
    }
    if isinstance(exc, StateError):
        kind = "sync state error"
    elif isinstance(exc, InputError):
        kind = "input error"
    else:
        kind = kinds.get(code, code.name)
    message = f"POLYV sync: {kind}: {exc}"
    return AirflowException(message) if code.retryable else AirflowFailException(message)


def _scrub_secret(value: Any, secret: str) -> Any:
    """``value`` (strings, lists, dicts) with every occurrence of ``secret`` replaced."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, "***")
    if isinstance(value, dict):
        return {_scrub_secret(k, secret): _scrub_secret(v, secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_secret(v, secret) for v in value]
    return value


# Reason codes of items that are fine as they are: left out of a failure message.
_NOT_PROBLEMS = frozenset({"unchanged", "duplicate", "dry_run"})


def _failure_message(result: SyncResult) -> str:
    counts = result.counts
    parts = [
        f"POLYV sync {result.run_id} did not sync every item: failed {counts.get('failed', 0):,}, "
        f"in_doubt {counts.get('in_doubt', 0):,}, not_attempted {counts.get('not_attempted', 0):,} "
        f"of {result.items:,}"
    ]
    if result.aborted:
        parts.append(f"stopped ({result.abort_cause}): {result.aborted}")
    if result.gate_failures:
        parts.append("data-quality gate failed: " + " | ".join(result.gate_failures))
    by_reason = sorted(
        ((c, n) for c, n in result.counts_by_reason.items() if c not in _NOT_PROBLEMS),
        key=lambda cn: -cn[1],
    )
    if by_reason:
        parts.append("by reason: " + ", ".join(f"{c} {n:,}" for c, n in by_reason))
    parts.append(f"report: {result.report_location}")
    return "; ".join(parts)


def _table_location(hook: Any, table: str) -> Any:
    """The OpenLineage/asset location of ``table`` on ``hook``'s connection (None if unreadable)."""
    from polyv_connector.airflow.assets import table_location

    try:
        conn = hook.get_connection(hook.get_conn_id())
        return table_location(conn.conn_type or "", table, host=conn.host, port=conn.port, database=conn.schema or None)
    except Exception:  # lineage is best effort: never fail a finished sync over it
        return None


def _sql_datasets(hook: Any, statement: str, side: str, log: Any) -> list[Any]:
    """Datasets of ``statement`` as the OpenLineage SQL parser sees them (no database round trip)."""
    try:
        from airflow.providers.openlineage.sqlparser import SQLParser

        connection = hook.get_connection(hook.get_conn_id())
        database_info = hook.get_openlineage_database_info(connection)
        if database_info is None:
            return []
        parser = SQLParser(
            dialect=hook.get_openlineage_database_dialect(connection),
            default_schema=hook.get_openlineage_default_schema(),
        )
        lineage = parser.generate_openlineage_metadata_from_sql(
            sql=statement, hook=hook, database_info=database_info, use_connection=False
        )
        return list(getattr(lineage, side, None) or [])
    except Exception as exc:  # lineage is best effort: never fail a finished sync over it
        log.debug("OpenLineage SQL parsing skipped: %s", exc)
        return []
