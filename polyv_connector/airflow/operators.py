"""``PolyvViewerFieldSyncOperator``: one sync run as an Airflow task, thin glue over the library.

``__init__`` only stores arguments; ``execute`` builds the source, the report sinks and the
options, calls :func:`polyv_connector.sync` (the same function the CLI calls) and turns
its result into an XCom summary, asset events and, when rows were not synced, a failed task.

Parse-time cost matters (the scheduler re-parses DAG files constantly): this module imports
neither pyarrow, pandas nor Great Expectations; ``execute`` imports them when a task runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import Asset, AssetAlias, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from polyv_connector import exit_codes
from polyv_connector.airflow import interval
from polyv_connector.airflow.assets import input_asset, task_outlets, templated
from polyv_connector.airflow.deferral import wait_or_defer
from polyv_connector.airflow.failures import airflow_error as _airflow_error
from polyv_connector.airflow.failures import as_chosen, exit_line
from polyv_connector.airflow.failures import failure_message as _failure_message
from polyv_connector.airflow.failures import scrub_secret as _scrub_secret
from polyv_connector.airflow.folders import Writer, confine_task_paths, dag_report_dir
from polyv_connector.airflow.hooks import PolyvHook, task_front, warn_if_budget_unshared
from polyv_connector.airflow.hooks import redis_url as _redis_url
from polyv_connector.airflow.links import DataDocsLink, ReportLink, RunPageLink
from polyv_connector.airflow.records import RunRecord
from polyv_connector.airflow.summary import absolute_location as _absolute_location
from polyv_connector.airflow.summary import start_line, task_summary, with_airflow_run_id, write_task_run_page
from polyv_connector.errors import PolyvConnectorError
from polyv_connector.run import Front, check_outputs, check_source, run_page_path
from polyv_connector.runspec import OPERATOR_SETTINGS, SETTINGS

if TYPE_CHECKING:
    from airflow.sdk import Context

    from polyv_connector.airflow.assets import Location
    from polyv_connector.config import Credentials
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

    One source (``input_path``, or ``source_conn_id`` with ``source_sql`` or ``source_table``),
    at least one report (``report_path`` and/or ``report_table``). Returns the run's strict-JSON
    summary as XCom (pushed too when the task fails); a run that left items unsynced fails the
    task after its report is written, retryable or not as
    :func:`polyv_connector.exit_codes.failure_is_retryable` says. Every argument but the two
    below is a setting of :data:`polyv_connector.runspec.SETTINGS` and defaults to ``None``,
    "not given" (the connection's extra, the environment or the setting's default applies):
    docs/airflow.md lists them all, with their defaults and meanings.

    :param polyv_conn_id: the ``polyv`` connection (appId, appSecret, base URL, sending extras).
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
    # Served by the plugin (airflow/plugin.py), from the summary's runPage, reportPath, validation.
    operator_extra_links = (RunPageLink(), ReportLink(), DataDocsLink())
    # Settings read before the run is resolved (outlets, the account check); set in __init__.
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
        max_changed_fraction: float | str | None = None,
        change_limit_min_items: int | str | None = None,
        max_source_shrink: float | str | None = None,
        whole_source: bool | str | None = None,
        null_values: str | None = None,
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
        mode: str | None = None,
        plan_path: str | None = None,
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
        self._executed = False  # see summary.kept_summary: links and the notifier ask it first
        if not explicit_outlets:
            self.outlets = self.default_outlets()
        if not explicit_inlets and input_path and not templated(input_path):
            located = input_asset(input_path.strip())
            self.inlets = [located] if located else []

    def default_outlets(self) -> list[Asset | AssetAlias]:
        """The report's asset(s), from the arguments as written in the DAG file (see
        :func:`polyv_connector.airflow.assets.task_outlets`)."""
        return task_outlets(
            table_conn=self.report_conn_id or self.source_conn_id,
            report_table=self.report_table,
            report_path=self.report_path,
            report_dir=self.report_dir,
            dag_id=self.dag_id if self.has_dag() else None,  # type: ignore[no-untyped-call]
            task_id=self.task_id,
        )

    def _given(self) -> dict[str, Any]:
        """The operator's arguments as RunSpec settings (``None`` = not given)."""
        return {key: getattr(self, _attribute(key)) for key in OPERATOR_SETTINGS}

    def execute(self, context: Context) -> dict[str, Any]:
        # urllib3 logs request URLs at DEBUG; they carry the signature: keep them out of task logs.
        from polyv_connector.transport.redact import install_log_redaction

        install_log_redaction()
        self._executed = True
        hook = PolyvHook(self.polyv_conn_id)
        try:
            from polyv_connector import runspec
            from polyv_connector.plans import prepare_mode, recorded_breach

            # Before the connection is read: a trigger-time id reaches only the accounts listed.
            runspec.check_polyv_conn_id(self.polyv_conn_id, self.allowed_polyv_conn_ids)
            credentials = hook.get_credentials()  # masks the secret before anything else
            # Trigger-time paths held to where the DAG author allows, before anything else.
            spec = confine_task_paths(hook.resolve_run(self._given()), self._task(context))
            # The report table and summary name the Airflow run this sync belongs to.
            spec = with_airflow_run_id(spec, context.get("run_id"))
            front = self._front(context, spec)
            if spec.mode != "apply":  # an apply's items come from its plan
                check_source(spec, front)
            self._lineage.update(
                mapping=spec.options.mapping,
                max_rejected_fraction=spec.options.max_rejected_fraction,
                app_id=credentials.app_id,
                base_url=credentials.base_url,
            )
            check_outputs(spec, front)
            # mode="plan": a dry run writing the plan; "apply": the plan's items (polyv_connector.plans).
            moded = prepare_mode(spec, credentials, front, facts=self._lineage)
            spec, prepared = moded.spec, moded.prepared
            validator, report = prepared.validator, prepared.report
            record = RunRecord.open(spec, front, self._lineage, dag_report_dir(spec, self._dag_id()))
            from polyv_connector.engine.result import new_run_id
            from polyv_connector.run import sync
            from polyv_connector.sender import Circuit

            self.log.info("%s", start_line(credentials, self._lineage.get("source_desc"), report.location, spec))
            for line in interval.start_lines(spec, context):
                self.log.info("%s", line)
            run_id = new_run_id()
            # on_kill() may come from another thread (Airflow's SIGTERM handler, or after an
            # execution_timeout): it stops the run through this handle.
            self._stop = Circuit()
            budget_url = _redis_url(spec.budget_conn_id)
            warn_if_budget_unshared(budget_url or spec.budget_url, self.log)
            with spec.open_budget(credentials.base_url, run_id, url=budget_url) as budget:
                # Before reading: a wait for the state or a recorded block may free the worker.
                options = wait_or_defer(self, spec, prepared.state, budget, run_id, credentials.app_id)
                record.start(run_id, app_id=credentials.app_id, run_page=run_page_path(spec, front))
                client = hook.get_conn(spec.options.send, budget)
                with moded.guard():  # a plan's file appears only once signed
                    result = sync(
                        prepared.source,
                        credentials,
                        options,
                        report,
                        validator=validator,
                        state=moded.state,
                        client=client,
                        run_id=run_id,
                        stop=self._stop,
                        # A report the sink could not take lands in this DAG's own folder.
                        report_fallback_dir=dag_report_dir(spec, self._dag_id()),
                        plan=moded.writer,
                    )
                    moded.finish(result, credentials.app_secret.reveal(), run_page_path(spec, front))
        except PolyvConnectorError as exc:
            self.log.error("%s", exit_line(exit_codes.for_error(exc).code, getattr(exc, "cause", None)))
            raise _airflow_error(as_chosen(exc, context.get("params"))) from exc
        except BaseException as exc:
            # execution_timeout (AirflowTaskTimeout) or SIGINT (KeyboardInterrupt) while sending:
            # the engine has written the whole report; say where, then let Airflow fail the task.
            from polyv_connector.engine.result import interrupted_result

            stopped = interrupted_result(exc)
            if stopped is not None:
                summary, _ = self._record(stopped, context, spec, credentials, self.log.warning)
                context["ti"].xcom_push(key="return_value", value=summary)
                record.finish(stopped, summary)
            raise
        finally:
            self._stop = None
            hook.close()

        from polyv_connector.airflow.lineage import note_validation

        note_validation(validator, result, self._lineage, self.log)
        interval.note_zero_rows(result, context, self.log)
        summary, page = self._record(result, context, spec, credentials, self.log.info)
        if page:
            self.log.info("run page: %s", page)
        from polyv_connector.airflow.assets import emit_asset_events

        emit_asset_events(context.get("outlet_events"), self.outlets or [], summary, self._written_locations, self.log)
        record.finish(result, summary)
        record.retain()
        if not result.ok and not recorded_breach(result, spec.mode):  # a plan's breach awaits approval
            # The return value is lost when a task raises: keep the summary for alerting.
            context["ti"].xcom_push(key="return_value", value=summary)
            # Deterministic failures (a gate, POLYV refusing the credentials or every failed value)
            # fail at once; transient ones (a block, timeouts, a stop) are left to Airflow's retries.
            retryable = exit_codes.failure_is_retryable(result.exit_code, result.abort_cause, result.counts_by_reason)
            failure = AirflowException if retryable else AirflowFailException
            self.log.error("%s", exit_line(result.exit_code, result.abort_cause))
            raise failure(_scrub_secret(_failure_message(result), credentials.app_secret.reveal()))
        return summary

    def resume_after_wait(self, context: Context, event: Any = None, **waited: Any) -> dict[str, Any]:
        """Resume after a deferred wait (:mod:`~polyv_connector.airflow.deferral`): look again, from the start."""
        self._waited = waited
        return self.execute(context)

    def on_kill(self) -> None:
        """Stop sending at once ("mark failed", a worker shutdown, a timeout): requests in flight get a
        few seconds (then ``in_doubt``), the report is written; a SIGKILL after it is safe."""
        stop = getattr(self, "_stop", None)
        if stop is not None:
            self.log.warning("on_kill: stopping the POLYV sync; the report is still written")
            stop.stop("Airflow stopped the task (on_kill)")

    def _dag_id(self) -> str:
        return self.dag_id if self.has_dag() else "dag"  # type: ignore[no-untyped-call]

    def _task(self, context: Context) -> Writer:
        return Writer.of(self._dag_id(), self.task_id, context)

    def _front(self, context: Context, spec: RunSpec) -> Front:
        report_folder = dag_report_dir(spec, self._dag_id())
        return task_front(self._task(context), report_folder, self.duckdb_external_access)

    def _record(
        self, result: SyncResult, context: Context, spec: RunSpec, credentials: Credentials, say: Callable[..., Any]
    ) -> tuple[dict[str, Any], str | None]:
        """The run's page, XCom summary (kept for lineage), summary lines in the task log and ``polyv.*``
        metrics (Airflow's ``Stats``). Returns the summary and the run page's path (None: not written)."""
        from polyv_connector.airflow import metrics

        airflow_run_id = context.get("run_id")
        page = write_task_run_page(result, spec, self._front(context, spec), airflow_run_id, self.log)
        summary = task_summary(result, airflow_run_id, credentials.app_secret.reveal(), spec.report_path, page)
        self._lineage["summary"] = summary
        say("%s", result.summary_line())
        say("report: %s", _absolute_location(result.report_location, spec.report_path))
        dag_id = self.dag_id if self.has_dag() else ""  # type: ignore[no-untyped-call]
        metrics.emit(result, {"dag_id": dag_id, "task_id": self.task_id, "app_id": credentials.app_id})
        return summary, page

    def _written_locations(self, summary: Mapping[str, Any]) -> list[Location]:
        """Where this run wrote, named as in its OpenLineage events (the same :class:`Location`)."""
        from polyv_connector.airflow.lineage import run_lineage, written_locations

        return written_locations(run_lineage(self._lineage, self.log), summary)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The run's OpenLineage facets (:mod:`polyv_connector.airflow.lineage`); None without the provider."""
        from polyv_connector.airflow.lineage import operator_lineage, run_lineage

        return operator_lineage(run_lineage(self._lineage, self.log))

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """As on completion: a failed gate or a stopped run still read and reported."""
        return self.get_openlineage_facets_on_complete(task_instance)
