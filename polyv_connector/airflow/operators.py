"""``PolyvViewerFieldSyncOperator``: one sync run as an Airflow task, thin glue over the library.

``__init__`` only stores arguments; ``execute`` builds the source, the report sinks and the
options, calls :func:`polyv_connector.engine.sync` (the same function the CLI calls) and turns
its result into an XCom summary, asset events and, when rows were not synced, a failed task.

Parse-time cost matters (the scheduler re-parses DAG files constantly): this module imports
neither pyarrow, pandas nor Great Expectations; ``execute`` imports them when a task runs.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import Asset, BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from polyv_connector.airflow.assets import report_file_asset, report_table_asset, sync_report_asset
from polyv_connector.airflow.hooks import PolyvHook
from polyv_connector.config import ColumnMapping, SyncOptions
from polyv_connector.errors import ConfigError, InputError, StateError
from polyv_connector.jsonsafe import strict_json
from polyv_connector.model import FIELD_ID, VALUE, VIEWER_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

    from polyv_connector.engine import Source, SyncResult
    from polyv_connector.report import ReportSink

# POLYV refusals a retry cannot fix: a wrong appId/secret or API URL needs a person.
_NOT_RETRYABLE_ABORTS = frozenset({"auth", "endpoint"})
# Default ceiling on rejected items when a Great Expectations suite is given (as in the CLI).
_DEFAULT_MAX_REJECTED = 0.05


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

    **Result**: returns a strict-JSON summary (counts per status, requests, duration, report
    location, runId) as XCom. Raises ``AirflowException`` after the report is written when any
    item is ``failed`` or ``not_attempted`` (a stopped run or a failed data-quality gate), and
    ``AirflowFailException`` (no retry) when POLYV refused the credentials or the URL, or a
    setting is invalid.

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
    :param source_parameters: bound parameters of ``source_sql`` (the driver's paramstyle).
    """

    template_fields: Sequence[str] = (
        "input_path",
        "source_conn_id",
        "source_sql",
        "source_table",
        "source_parameters",
        "report_path",
        "report_conn_id",
        "report_table",
        "state_dir",
        "state_table",
        "state_conn_id",
        "expectation_suite_path",
        "validation_dir",
        "dry_run",
        "full_refresh",
        "max_rejected_fraction",
    )
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"source_sql": "sql", "source_parameters": "json"}
    ui_color = "#e8f4ff"

    def __init__(
        self,
        *,
        polyv_conn_id: str = PolyvHook.default_conn_name,
        input_path: str | None = None,
        source_conn_id: str | None = None,
        source_sql: str | None = None,
        source_table: str | None = None,
        source_parameters: Sequence[Any] | Mapping[str, Any] | None = None,
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
        diff_in_warehouse: bool = False,
        reset_corrupt_state: bool = False,
        expectation_suite_path: str | None = None,
        validation_dir: str | None = None,
        max_rejected_fraction: float | str | None = None,
        check_fields: bool = True,
        max_rps: float | None = None,
        batch_size: int | None = None,
        concurrency: int | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
        read_batch_rows: int = 65_536,
        **kwargs: Any,
    ) -> None:
        explicit_outlets = "outlets" in kwargs
        super().__init__(**kwargs)
        self.polyv_conn_id = polyv_conn_id
        self.input_path = input_path
        self.source_conn_id = source_conn_id
        self.source_sql = source_sql
        self.source_table = source_table
        self.source_parameters = source_parameters
        self.viewer_id_column = viewer_id_column
        self.field_id_column = field_id_column
        self.value_column = value_column
        self.fields = dict(fields) if fields else None
        self.report_path = report_path
        self.report_conn_id = report_conn_id
        self.report_table = report_table
        self.dry_run = dry_run
        self.full_refresh = full_refresh
        self.state_dir = state_dir
        self.state_table = state_table
        self.state_conn_id = state_conn_id
        self.diff_in_warehouse = diff_in_warehouse
        self.reset_corrupt_state = reset_corrupt_state
        self.expectation_suite_path = expectation_suite_path
        self.validation_dir = validation_dir
        self.max_rejected_fraction = max_rejected_fraction
        self.check_fields = check_fields
        self.max_rps = max_rps
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.read_batch_rows = read_batch_rows
        self._lineage: dict[str, Any] = {}
        if not explicit_outlets:
            self.outlets = self.default_outlets()

    # ---- parse time ---------------------------------------------------------------------------
    def default_outlets(self) -> list[Asset]:
        """The report's asset(s), from the arguments as written in the DAG file.

        Templated names are unknown at parse time, so a templated report gets the task's own
        report asset instead; each asset event's ``extra`` names the concrete location.
        """
        outlets: list[Asset] = []
        table_conn = self.report_conn_id or self.source_conn_id
        if self.report_table and table_conn and not _templated(self.report_table, table_conn):
            outlets.append(report_table_asset(table_conn, self.report_table.strip()))
        if self.report_path and not _templated(self.report_path):
            outlets.append(report_file_asset(self.report_path.strip()))
        if not outlets and (self.report_table or self.report_path) and self.has_dag():
            outlets.append(sync_report_asset(self.dag_id, self.task_id))
        return outlets

    # ---- run time -----------------------------------------------------------------------------
    def execute(self, context: Context) -> dict[str, Any]:
        # urllib3 logs request URLs at DEBUG; they carry the signature: keep them out of task logs.
        from polyv_connector.transport.redact import install_log_redaction

        install_log_redaction()
        hook = PolyvHook(self.polyv_conn_id)
        report: ReportSink | None = None
        try:
            credentials = hook.get_credentials()  # masks the secret before anything else
            options = self._options(hook)
            source = self._source()
            state = self._state(credentials.app_id, options)
            if self._pushdown(options, state):
                source.skip_unchanged = state  # type: ignore[attr-defined]  # a SqlSource here
                state.load_for_local_diff = False
            validator = self._validator(context)
            report = self._report()
            from polyv_connector.engine import sync

            unchanged_in_warehouse = None
            if getattr(source, "skip_unchanged", None) is not None:
                # Counted before the run: afterwards the rows it sends are unchanged too.
                unchanged_in_warehouse = source.count_unchanged(options.mapping.source_columns)

            self.log.info(
                "POLYV sync: appId %s at %s, source %s, report %s%s%s",
                credentials.app_id,
                credentials.base_url,
                self._lineage.get("source_desc"),
                report.location,
                " (dry run)" if options.dry_run else "",
                " (full refresh)" if options.full_refresh else "",
            )
            result = sync(source, credentials, options, report, validator=validator, state=state)
            if unchanged_in_warehouse is not None:
                result.extra["unchangedInWarehouse"] = unchanged_in_warehouse
        except StateError as exc:
            _abort(report)
            raise AirflowFailException(f"POLYV sync: sync state error: {exc}") from exc
        except InputError as exc:
            # Input may appear or recover (late file, warehouse down): let Airflow retry.
            _abort(report)
            raise AirflowException(f"POLYV sync: input error: {exc}") from exc
        except ConfigError as exc:
            _abort(report)
            raise AirflowFailException(f"POLYV sync: configuration error: {exc}") from exc
        except BaseException:
            _abort(report)
            raise
        finally:
            hook.close()

        if validator is not None:
            result.extra.update(validator.summary())
            validation = result.extra.get("validation") or {}
            self._lineage["validation"] = validation
            for label, key in (("validation result", "resultJson"), ("data docs", "dataDocsPage")):
                if validation.get(key):
                    self.log.info("%s: %s", label, validation[key])
        summary = self._summary(result, context, credentials.app_secret.reveal())
        self._lineage["app_id"] = credentials.app_id
        self._lineage["base_url"] = credentials.base_url
        self.log.info("%s", result.summary_line())
        self.log.info("report: %s", result.report_location)
        self._emit_asset_events(context, summary)
        if not result.ok:
            # The return value is lost when a task raises: keep the summary for alerting.
            context["ti"].xcom_push(key="return_value", value=summary)
            failure = AirflowFailException if result.abort_cause in _NOT_RETRYABLE_ABORTS else AirflowException
            raise failure(_scrub_secret(_failure_message(result), credentials.app_secret.reveal()))
        return summary

    def _options(self, hook: PolyvHook) -> SyncOptions:
        send = hook.get_send_options(
            max_rps=self.max_rps,
            batch_size=self.batch_size,
            concurrency=self.concurrency,
            timeout=self.timeout,
            max_attempts=self.max_attempts,
        )
        if self.fields:
            mapping = ColumnMapping.wide(self.viewer_id_column, self.fields)
        else:
            mapping = ColumnMapping(self.viewer_id_column, self.field_id_column, self.value_column)
        max_rejected = _as_fraction(self.max_rejected_fraction)
        suite = _blank_to_none(self.expectation_suite_path)
        if max_rejected is None and suite:  # as in the CLI: the gate comes with a suite
            max_rejected = _DEFAULT_MAX_REJECTED
        return SyncOptions(
            send=send,
            mapping=mapping,
            dry_run=_as_bool(self.dry_run, "dry_run"),
            full_refresh=_as_bool(self.full_refresh, "full_refresh"),
            check_fields=self.check_fields,
            state_dir=_blank_to_none(self.state_dir),
            reset_corrupt_state=self.reset_corrupt_state,
            max_rejected_fraction=max_rejected,
            expectations_path=suite,
            read_batch_rows=self.read_batch_rows,
        )

    def _state(self, app_id: str, options: SyncOptions) -> Any:
        """The warehouse state table, when there is no state_dir and a connection to keep it on."""
        table = _blank_to_none(self.state_table)
        conn_id = self.state_conn_id or self.report_conn_id or self.source_conn_id
        if options.state_dir or not table or not conn_id:
            return None
        from polyv_connector.airflow.state_table import SqlStateTable

        return SqlStateTable(_db_hook(conn_id, "state_conn_id"), table, app_id, create=not options.dry_run)

    def _pushdown(self, options: SyncOptions, state: Any) -> bool:
        if not self.diff_in_warehouse or options.full_refresh:
            return False
        state_conn = self.state_conn_id or self.report_conn_id or self.source_conn_id
        if state is None or not self.source_conn_id or state_conn != self.source_conn_id:
            raise ConfigError(
                "diff_in_warehouse",
                "needs a SQL source and the state table on the source "
                "connection (state_table, with state_conn_id unset or equal "
                "to source_conn_id, and no state_dir)",
            )
        if options.mapping.is_wide:
            raise ConfigError("diff_in_warehouse", "works with the long form only (no fields=...)")
        return True

    def _source(self) -> Source:
        input_path = _blank_to_none(self.input_path)
        sql, table = _blank_to_none(self.source_sql), _blank_to_none(self.source_table)
        if bool(input_path) == bool(self.source_conn_id):
            raise ConfigError(
                "input_path",
                "give exactly one source: input_path (Parquet) or source_conn_id with source_sql or source_table",
            )
        if input_path:
            from polyv_connector.sources.parquet import ParquetSource

            self._lineage.update(source_kind="file", source_path=input_path, source_desc=input_path)
            return ParquetSource(input_path, setting="input_path")
        if bool(sql) == bool(table):
            raise ConfigError("source_sql", "with source_conn_id give exactly one of source_sql and source_table")
        from polyv_connector.sources.sql import SqlSource

        db_hook = _db_hook(self.source_conn_id or "", "source_conn_id")
        self._lineage.update(
            source_kind="sql",
            source_hook=db_hook,
            source_sql=sql,
            source_table=table,
            source_desc=f"{table or 'query'} (connection {self.source_conn_id})",
        )
        return SqlSource(
            db_hook,
            sql=sql,
            table=table,
            parameters=self.source_parameters or None,
            setting="source_sql" if sql else "source_table",
        )

    def _validation_dir(self, context: Context) -> str | None:
        """Where the validation JSON and Data Docs go: next to the Parquet report, else under
        ``validation_dir``, else ``$AIRFLOW_HOME/polyv_validation/<dag>/<run>/``."""
        if _blank_to_none(self.report_path):
            return _blank_to_none(self.report_path)
        explicit = _blank_to_none(self.validation_dir)
        if explicit:
            return explicit
        home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
        run = re.sub(r"[^A-Za-z0-9._-]", "_", str(context.get("run_id") or "run"))
        dag = re.sub(r"[^A-Za-z0-9._-]", "_", self.dag_id if self.has_dag() else "dag")
        return os.path.join(home, "polyv_validation", dag, f"{run}.parquet")

    def _validator(self, context: Context) -> Any:
        suite = _blank_to_none(self.expectation_suite_path)
        if not suite:
            return None
        # Great Expectations takes seconds to import: only tasks that use a suite pay for it.
        from polyv_connector.expectations import SuiteValidator, bundled_suite_path

        if suite == "default":  # the suite shipped with the package, as in the CLI
            suite = str(bundled_suite_path())
        # The validation result JSON and Data Docs go next to the Parquet report, if any.
        return SuiteValidator.from_file(
            suite, report_dir=self._validation_dir(context), setting="expectation_suite_path"
        )

    def _report(self) -> ReportSink:
        from polyv_connector.report import MultiReport, ParquetReport

        path, table = _blank_to_none(self.report_path), _blank_to_none(self.report_table)
        if not path and not table:
            raise ConfigError(
                "report_path", "give report_path (Parquet) and/or report_table: every run leaves a per-item report"
            )
        sinks: list[ReportSink] = []
        if table:
            conn_id = self.report_conn_id or self.source_conn_id
            if not conn_id:
                raise ConfigError(
                    "report_conn_id", "report_table needs report_conn_id (or a source_conn_id to default to)"
                )
            from polyv_connector.airflow.report_table import SqlReportTable

            db_hook = _db_hook(conn_id, "report_conn_id")
            # Created/checked now, before anything is sent, so a permission problem fails early.
            sinks.append(SqlReportTable(db_hook, table, location=f"{table} (connection {conn_id})"))
            self._lineage.update(report_hook=db_hook, report_table=table, report_conn_id=conn_id)
        if path:
            sinks.append(ParquetReport(path, setting="report_path"))
            self._lineage["report_path"] = path
        return sinks[0] if len(sinks) == 1 else MultiReport(sinks)

    def _summary(self, result: SyncResult, context: Context, secret: str) -> dict[str, Any]:
        summary = result.to_dict()
        summary["airflowRunId"] = context.get("run_id")
        # Defence in depth: nothing above should ever hold the secret; scrub the strings
        # themselves (not the JSON text, where escaping could hide it).
        summary = _scrub_secret(strict_json(summary), secret)
        json.dumps(summary, ensure_ascii=False, allow_nan=False)  # the XCom contract: fail here
        return summary

    def _emit_asset_events(self, context: Context, summary: dict[str, Any]) -> None:
        events = context.get("outlet_events")
        if events is None:
            return
        extra = {k: summary.get(k) for k in ("runId", "ok", "items", "counts", "report", "dryRun")}
        for outlet in self.outlets or []:
            if isinstance(outlet, Asset):
                try:
                    events[outlet].extra.update(extra)
                except Exception as exc:  # an event extra is a nicety, never a reason to fail
                    self.log.debug("could not annotate asset event %s: %s", outlet.uri, exc)

    # ---- lineage ------------------------------------------------------------------------------
    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage inputs (Parquet input or SQL tables) and outputs (POLYV, the report).

        The OpenLineage provider is optional: without it this returns ``None``.
        """
        try:
            from airflow.providers.openlineage.extractors import OperatorLineage
            from openlineage.client.event_v2 import Dataset
        except ImportError:
            return None
        info = self._lineage
        inputs: list[Any] = []
        outputs: list[Any] = []
        if info.get("source_kind") == "file":
            inputs.append(_file_dataset(Dataset, info["source_path"]))
        elif info.get("source_kind") == "sql":
            table = info.get("source_table")
            statement = f"SELECT * FROM {table}" if table else info.get("source_sql") or ""
            inputs.extend(_sql_datasets(info["source_hook"], statement, "inputs", self.log))
        if info.get("validation"):
            inputs = [_with_quality_facet(Dataset, d, info["validation"]) for d in inputs]
        if info.get("app_id"):
            outputs.append(
                Dataset(namespace=info["base_url"], name=f"live/v4/user/custom-field/viewer-value/{info['app_id']}")
            )
        if info.get("report_path"):
            outputs.append(_file_dataset(Dataset, info["report_path"]))
        if info.get("report_table"):
            statement = f"INSERT INTO {info['report_table']} SELECT 1"
            outputs.extend(_sql_datasets(info["report_hook"], statement, "outputs", self.log))
        return OperatorLineage(inputs=inputs, outputs=outputs)


# ---- helpers -----------------------------------------------------------------------------------
def _with_quality_facet(dataset_cls: Any, dataset: Any, validation: dict[str, Any]) -> Any:
    """``dataset`` with an OpenLineage data-quality assertions facet built from the validation."""
    try:
        from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq
    except ImportError:
        return dataset
    facet = dq.DataQualityAssertionsDatasetFacet(
        assertions=[
            dq.Assertion(assertion=e["type"], success=bool(e["success"]), column=e.get("column"))
            for e in validation.get("expectations") or []
            if e.get("success") is not None
        ]
    )
    facets = {**(getattr(dataset, "facets", None) or {}), "dataQuality": facet}
    return dataset_cls(namespace=dataset.namespace, name=dataset.name, facets=facets)


def _templated(*values: str) -> bool:
    return any("{{" in v or "{%" in v for v in values)


def _blank_to_none(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value.strip() if isinstance(value, str) else value


def _as_bool(value: Any, setting: str) -> bool:
    """A flag that may arrive as a rendered template string ("True", "false", "1", ...)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y", "on"):
        return True
    if text in ("false", "0", "no", "n", "off", "", "none"):
        return False
    raise ConfigError(setting, f"expected true or false, got {value!r}")


def _as_fraction(value: Any) -> float | None:
    value = _blank_to_none(value)
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ConfigError("max_rejected_fraction", f"expected a number between 0 and 1, got {value!r}") from None
    if math.isnan(result):
        raise ConfigError("max_rejected_fraction", "expected a number between 0 and 1, got NaN")
    return result


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


def _abort(report: Any) -> None:
    """Drop what a failed run had started writing (warehouse rows rolled back, Parquet partials removed)."""
    sinks = getattr(report, "sinks", None) or ([report] if report is not None else [])
    for sink in sinks:
        abort = getattr(sink, "abort", None)
        if abort is not None:
            abort()


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


def _failure_message(result: SyncResult) -> str:
    counts = result.counts
    parts = [
        f"POLYV sync {result.run_id} did not sync every item: failed {counts.get('failed', 0):,}, "
        f"not_attempted {counts.get('not_attempted', 0):,} of {result.items:,}"
    ]
    if result.aborted:
        parts.append(f"stopped ({result.abort_cause}): {result.aborted}")
    if result.gate_failures:
        parts.append("data-quality gate failed: " + " | ".join(result.gate_failures))
    parts.append(f"report: {result.report_location}")
    return "; ".join(parts)


def _file_dataset(dataset_cls: Any, path: str) -> Any:
    from urllib.parse import urlsplit

    if "://" in path:
        parts = urlsplit(path)
        return dataset_cls(namespace=f"{parts.scheme}://{parts.hostname or ''}", name=parts.path or "/")
    import os

    return dataset_cls(namespace="file", name=os.path.abspath(path))


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
