"""``PolyvViewerFieldSyncOperator``: one sync run as an Airflow task, thin glue over the library.

``__init__`` only stores arguments; ``execute`` builds the source, the report sinks and the
options, calls :func:`polyv_connector.sync` (the same function the CLI calls) and turns
its result into an XCom summary, asset events and, when rows were not synced, a failed task.

Parse-time cost matters (the scheduler re-parses DAG files constantly): this module imports
neither pyarrow, pandas nor Great Expectations; ``execute`` imports them when a task runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import Asset, AssetAlias, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from polyv_connector import exit_codes
from polyv_connector.airflow.assets import (
    input_asset,
    report_place_assets,
    sync_alias,
    sync_report_asset,
)
from polyv_connector.airflow.deferral import wait_or_defer
from polyv_connector.airflow.failures import airflow_error as _airflow_error
from polyv_connector.airflow.failures import failure_message as _failure_message
from polyv_connector.airflow.failures import scrub_secret as _scrub_secret
from polyv_connector.airflow.hooks import PolyvHook
from polyv_connector.airflow.hooks import db_hook as _db_hook
from polyv_connector.airflow.hooks import redis_url as _redis_url
from polyv_connector.airflow.hooks import same_database as _same_database
from polyv_connector.airflow.links import DataDocsLink, ReportLink, RunPageLink
from polyv_connector.airflow.records import RunRecord
from polyv_connector.airflow.summary import absolute_location as _absolute_location
from polyv_connector.errors import PolyvConnectorError
from polyv_connector.paths import check_output_dir, is_url
from polyv_connector.run import Front, check_source, prepare, run_page_path, validation_dir
from polyv_connector.runspec import OPERATOR_SETTINGS, SETTINGS, confine

if TYPE_CHECKING:
    from airflow.sdk import Context

    from polyv_connector.airflow.assets import Location
    from polyv_connector.engine.result import SyncResult
    from polyv_connector.runspec import RunSpec
    from polyv_connector.sender import Circuit


# Not ``self.dry_run``: that would hide BaseOperator.dry_run(), Airflow's template check.
_ATTRIBUTES = {"dry_run": "dry_run_setting"}


def _attribute(key: str) -> str:
    """The operator attribute that holds run setting ``key`` (a template field when templated)."""
    return _ATTRIBUTES.get(key, key)


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

    Every argument but ``polyv_conn_id`` is a setting of :data:`polyv_connector.runspec.SETTINGS`
    and defaults to ``None``, "not given": the connection's extra, the environment or the
    setting's default applies (the help of ``polyv-sync run`` lists the defaults).

    :param polyv_conn_id: the ``polyv`` connection (appId, appSecret, base URL, sending extras).
    :param dry_run: plan and report, send nothing. Templated; "true"/"false" strings accepted.
    :param full_refresh: ignore the sync state and send every valid item. Templated.
    :param state_dir: folder of the sync state (unchanged items are not resent); templated.
    :param state_table: warehouse table of the sync state (default ``polyv_sync_state``), used
        when there is no ``state_dir`` and a database connection: ``state_conn_id``, else
        ``report_conn_id``, else ``source_conn_id``. ``""`` keeps no state.
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

    :param duckdb_external_access: let a DuckDB source connection read files, URLs and extensions
        (views over object storage need it). Off by default: the source's DuckDB is confined to
        its database (:mod:`polyv_connector.warehouse.confine`). Not templated, and no RunSpec
        setting: only the DAG file sets it, never a trigger's params or conf.
    """

    # The run settings rendered as Jinja templates: runspec.SETTINGS says which.
    template_fields: Sequence[str] = tuple(_attribute(k) for k in OPERATOR_SETTINGS if SETTINGS[k].templated)
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"source_sql": "sql", "source_parameters": "json"}
    ui_color = "#e8f4ff"
    # Served by the plugin (polyv_connector.airflow.plugin); Airflow stores each link as an XCom
    # when the task ends, read from the summary's runPage / reportPath / validation.
    operator_extra_links = (RunPageLink(), ReportLink(), DataDocsLink())
    # The run settings read before the run is resolved (the outlets at parse time, the account
    # check): the others reach the RunSpec through _given() only.
    source_conn_id: str | None
    report_conn_id: str | None
    report_table: str | None
    report_path: str | None
    report_dir: str | None
    allowed_polyv_conn_ids: Sequence[str] | str | None

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
        viewer_id_column: str | None = None,
        field_id_column: str | None = None,
        value_column: str | None = None,
        fields: Mapping[str, str] | None = None,
        report_path: str | None = None,
        report_conn_id: str | None = None,
        report_table: str | None = None,
        dry_run: bool | str | None = None,
        full_refresh: bool | str | None = None,
        state_dir: str | None = None,
        state_table: str | None = None,
        state_conn_id: str | None = None,
        diff_in_warehouse: bool | str | None = None,
        reset_corrupt_state: bool | None = None,
        expectation_suite_path: str | None = None,
        validation_dir: str | None = None,
        report_dir: str | None = None,
        allowed_input_prefixes: Sequence[str] | str | None = None,
        allowed_suite_prefixes: Sequence[str] | str | None = None,
        max_rejected_fraction: float | str | None = None,
        check_fields: bool | None = None,
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
        report_rows: str | None = None,
        runs_table: str | None = None,
        report_retention_days: int | str | None = None,
        runs_retention_days: int | str | None = None,
        report_day_partitions: bool | None = None,
        deferrable: bool | None = None,
        duckdb_external_access: bool = False,
        **kwargs: Any,
    ) -> None:
        arguments = locals()  # the settings as written in the signature above, read in a loop below
        explicit_outlets = "outlets" in kwargs
        explicit_inlets = "inlets" in kwargs
        super().__init__(**kwargs)
        self.polyv_conn_id = polyv_conn_id
        # Every run setting the operator takes (runspec.SETTINGS) is stored as given, None for
        # "not given": the RunSpec applies the connection's extras and the defaults at run time.
        for key in OPERATOR_SETTINGS:
            setattr(self, _attribute(key), arguments[key])
        # Author-only: not templated and not a RunSpec setting, so no trigger can turn it on.
        self.duckdb_external_access = duckdb_external_access is True
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
        table_conn = self.report_conn_id or self.source_conn_id
        fixed_table = self.report_table and table_conn and not _templated(self.report_table, table_conn)
        # The DAG's report folder is known when report_dir is (report_path is then a name in it,
        # templated or not), or from a fixed absolute report_path.
        fixed_dir = self.report_dir if self.report_dir and not _templated(self.report_dir) else None
        fixed_path = self.report_path if self.report_path and not _templated(self.report_path) else None
        # One asset per place (the table, the DAG's report folder), never one per run's file.
        outlets: list[Asset | AssetAlias] = list(
            report_place_assets(
                self._dag_id(),
                report_dir=fixed_dir if self.report_path else None,
                report_path=None if self.report_dir else fixed_path,
                report_table=self.report_table if fixed_table else None,
                conn_id=table_conn,
            )
        )
        if self.has_dag():  # type: ignore[no-untyped-call]
            if not outlets and (self.report_table or self.report_path):
                outlets.append(sync_report_asset(self.dag_id, self.task_id))
            # The real locations (known when the task runs) come as events through the alias.
            outlets.append(sync_alias(self.dag_id, self.task_id))
        return outlets

    # ---- run time -----------------------------------------------------------------------------
    def _given(self) -> dict[str, Any]:
        """The operator's arguments as RunSpec settings (``None`` = not given)."""
        return {key: getattr(self, _attribute(key)) for key in OPERATOR_SETTINGS}

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
            spec = self._confine(hook.resolve_run(self._given()), context)
            # The report table and summary name the Airflow run this sync belongs to.
            spec = _with_airflow_run_id(spec, context.get("run_id"))
            front = self._front(context, spec)
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
            record = RunRecord.open(spec, front, self._lineage, self._dag_report_dir(spec))
            from polyv_connector.engine.result import new_run_id
            from polyv_connector.run import sync

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
                # Before reading: a wait for the state or a recorded block may free the worker.
                options = wait_or_defer(self, spec, prepared.state, budget, run_id, credentials.app_id)
                record.start(run_id, app_id=credentials.app_id, run_page=run_page_path(spec, front))
                client = hook.get_conn(spec.options.send, budget)
                result = sync(
                    prepared.source,
                    credentials,
                    options,
                    report,
                    validator=validator,
                    state=prepared.state,
                    client=client,
                    run_id=run_id,
                    stop=self._stop,
                    # A report the sink could not take lands in this DAG's own folder.
                    report_fallback_dir=self._dag_report_dir(spec),
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
                record.finish(stopped, summary)
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
        record.finish(result, summary)
        record.retain()
        if not result.ok:
            # The return value is lost when a task raises: keep the summary for alerting.
            context["ti"].xcom_push(key="return_value", value=summary)
            # Deterministic failures (a gate, POLYV refusing the credentials or every failed value)
            # fail at once; transient ones (a block, timeouts, a stop) are left to Airflow's retries.
            retryable = exit_codes.failure_is_retryable(result.exit_code, result.abort_cause, result.counts_by_reason)
            failure = AirflowException if retryable else AirflowFailException
            raise failure(_scrub_secret(_failure_message(result), credentials.app_secret.reveal()))
        return summary

    def resume_after_wait(self, context: Context, event: Any = None, **waited: Any) -> dict[str, Any]:
        """Where the task resumes after a deferred wait (:mod:`~polyv_connector.airflow.deferral`):
        it looks again, from the start, with how long it has waited so far."""
        self._waited = waited
        return self.execute(context)

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

    def _dag_id(self) -> str:
        return self.dag_id if self.has_dag() else "dag"  # type: ignore[no-untyped-call]

    def _confine(self, spec: RunSpec, context: Context) -> RunSpec:
        """``spec`` with its trigger-time paths held to where the DAG author allows. With a report
        folder, the report name must end in ``.parquet``, lands in ``<report folder>/<dag_id>/``
        and is refused if it exists, unless an earlier try of this task instance wrote it: a
        trigger cannot name (overwrite, or plant a page in) another DAG's or another run's files."""
        import dataclasses

        from polyv_connector.airflow import folders
        from polyv_connector.runpage import page_path_for

        if spec.report_dir:
            if spec.report_path:
                folders.check_report_name(spec.report_path, spec.label("report_path"))
            dag_dir = folders.dag_folder(spec.report_dir, self._dag_id(), spec.label("report_dir"))
            spec = dataclasses.replace(spec, report_dir=dag_dir)
        spec = confine(spec)
        # A local report only: an object-store name is the bucket's to guard (no owner file there).
        if spec.report_dir and spec.report_path and not is_url(spec.report_path):
            ti = context.get("ti")
            map_index = getattr(ti, "map_index", -1)
            writer = folders.Writer(
                self._dag_id(),
                str(context.get("run_id") or ""),
                self.task_id,
                map_index if isinstance(map_index, int) else -1,
            )
            page = page_path_for(spec.report_path)
            folders.claim_report_name(spec.report_path, writer, spec.label("report_path"), also=(page,))
        return spec

    def _dag_report_dir(self, spec: RunSpec) -> str:
        """This DAG's report folder: ``<report_dir>/<dag_id>`` (``report_dir`` is made per DAG by
        :meth:`_confine`), else ``$AIRFLOW_HOME/polyv_reports/<dag_id>``."""
        from polyv_connector.airflow import folders
        from polyv_connector.deployment import default_report_dir

        return spec.report_dir or folders.dag_folder(default_report_dir(), self._dag_id())

    def _front(self, context: Context, spec: RunSpec) -> Front:
        """What this task brings to the run's preparation: its connections (Airflow hooks), and
        Airflow's home and the task's names for the files the settings do not place (a
        table-only report's run page goes to this DAG's own report folder)."""
        from polyv_connector.deployment import airflow_home

        ti = context.get("ti")
        map_index = getattr(ti, "map_index", -1)
        return Front(
            db_hook=_db_hook,
            same_database=_same_database,
            home=airflow_home(),
            dag_id=self._dag_id(),
            run_id=str(context.get("run_id") or "run"),
            task_id=self.task_id,
            map_index=map_index if isinstance(map_index, int) else -1,
            report_folder=self._dag_report_dir(spec),
            duckdb_external_access=self.duckdb_external_access,
        )

    def _write_run_page(self, result: SyncResult, context: Context, spec: RunSpec) -> str | None:
        """Write the run page; its absolute path, or None when it could not be written (logged:
        the page is a view of the run, never a reason to fail it)."""
        try:
            from polyv_connector.runpage import write_run_page

            return write_run_page(
                result,
                run_page_path(spec, self._front(context, spec)),
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
        from polyv_connector.airflow.summary import task_summary

        return task_summary(result, context.get("run_id"), secret, spec.report_path if spec else None, run_page)

    def _emit_metrics(self, result: SyncResult, app_id: str) -> None:
        """``polyv.*`` metrics through Airflow's ``Stats`` (a no-op unless ``[metrics]`` is on)."""
        from polyv_connector.airflow import metrics

        dag_id = self.dag_id if self.has_dag() else ""  # type: ignore[no-untyped-call]
        metrics.emit(result, {"dag_id": dag_id, "task_id": self.task_id, "app_id": app_id})

    def _emit_asset_events(self, context: Context, summary: dict[str, Any]) -> None:
        from polyv_connector.airflow.assets import emit_asset_events

        emit_asset_events(context.get("outlet_events"), self.outlets or [], summary, self._written_locations, self.log)

    def _written_locations(self, summary: Mapping[str, Any]) -> list[Location]:
        """Where this run wrote, named as in its OpenLineage events (the same :class:`Location`)."""
        from polyv_connector.airflow.lineage import run_lineage, written_locations

        return written_locations(run_lineage(self._lineage, self.log), summary)

    # ---- lineage ------------------------------------------------------------------------------
    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage inputs (the source, the sync state) and outputs (the report, the state,
        POLYV when something was sent), with the data-quality and run facets: see
        :mod:`polyv_connector.airflow.lineage`. ``None`` without the OpenLineage provider."""
        from polyv_connector.airflow.lineage import operator_lineage, run_lineage

        return operator_lineage(run_lineage(self._lineage, self.log))

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """As on completion: a failed gate or a stopped run still read its source and wrote its
        report (and POLYV is declared only if something was sent)."""
        return self.get_openlineage_facets_on_complete(task_instance)


# ---- helpers -----------------------------------------------------------------------------------
def _with_airflow_run_id(spec: RunSpec, run_id: Any) -> RunSpec:
    import dataclasses

    if not run_id:
        return spec
    return dataclasses.replace(spec, options=dataclasses.replace(spec.options, airflow_run_id=str(run_id)))


def _templated(*values: str) -> bool:
    return any("{{" in v or "{%" in v for v in values)
