"""A Great Expectations suite as the engine's :class:`~polyv_connector.engine.Validator`.

GX stays the source of truth: every verdict comes from GX's own metric implementations and
its own ``Expectation._validate`` logic. What this module changes is *how often* and *on
what* GX computes, so that a million rows cost about what GX's SUMMARY mode costs:

* **Per chunk** (``validate_chunk``), the metrics every expectation depends on are resolved
  by GX in one metric graph on a pandas frame of the chunk, at SUMMARY level (counts and the
  first 20 unexpected values; never the per-row dicts of COMPLETE mode, whose cost grows
  with the failures: ~15x ours on 1M items with 20% failing, see bench/).
  For a *row-local* column-map expectation (its verdict on a row depends on that row
  alone: regexes, value sets, lengths, nulls...), the same graph also holds GX's boolean
  ``<metric>.condition`` series, the vectorised filter behind ``unexpected_count``: its true
  positions are exactly the unexpected rows, so rejecting them costs one ``numpy`` lookup and
  no second pass. Every failed expectation of a row is named in its reason.
* **Across chunks**, the per-chunk metric values are folded (``merge.py``: counts add up,
  min/max compare, partial lists concatenate), and at ``finish()`` GX judges each
  expectation on the folded values, as it would have on the whole input.
* **Whole-column** expectations whose metrics have no exact fold (uniqueness, distinct
  counts, means, medians, z-scores, outliers...) cannot be judged chunk by chunk. The
  columns they read are kept (as compact Arrow arrays) and GX evaluates them once, on the
  whole input, at ``finish()``. Limit: memory for those columns grows with the input (about
  the size of the column's text plus 8 bytes per item); everything else stays bounded by the
  chunk size.

Row-local column-map expectations reject rows; everything else is a run gate (nothing is
sent when it fails). A row-local expectation with ``mostly`` below 1 does both: its
unexpected rows are rejected, and if more than ``1 - mostly`` of the rows are unexpected,
the run stops.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyv_connector.expectations import merge, planning, results
from polyv_connector.expectations.planning import BATCH_ID, ITEM_COLUMNS, ROW_NUMBER, RUNTIME_CONFIGURATION, Planned
from polyv_connector.expectations.suite import build_suite, import_gx, read_suite_file

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("polyv_connector.expectations")


class SuiteValidator:
    """Validates item chunks with a GX 1.x expectation suite: row rejections and run gates.

    Build it with :meth:`from_file`; the engine then calls :meth:`validate_chunk` per chunk and
    :meth:`finish` once, before anything is sent. :meth:`summary` is strict JSON for the run
    summary and the Airflow XCom. GX is imported here (in :meth:`from_file`), never when
    :mod:`polyv_connector` is imported.
    """

    def __init__(
        self, suite: Any, *, source: str = "<suite>", report_dir: str | None = None, setting: str = "--expectations"
    ) -> None:
        """Plan ``suite`` (a ``great_expectations.ExpectationSuite``) for chunked validation.

        Raises :class:`ConfigError` (naming ``setting`` and ``source``) for an expectation that
        refers to a column the items do not have, or that GX cannot evaluate on pandas.
        """
        import_gx()
        from great_expectations.execution_engine import PandasExecutionEngine
        from great_expectations.validator.metrics_calculator import MetricsCalculator

        self.suite = suite
        self.source = source
        self.setting = setting
        self.output_dir, self.output_stem = results.output_location(report_dir, suite.name)
        # caching=False: every chunk is loaded under the same batch id (so metric ids, and thus
        # the folds, line up across chunks); a cache keyed by those ids would serve chunk 1's
        # values for chunk 2.
        self._engine = PandasExecutionEngine(caching=False)
        self._calc = MetricsCalculator(execution_engine=self._engine, show_progress_bars=False)
        # Some expectations (e.g. expect_column_values_to_be_of_type) read the column types
        # while planning: give them an empty frame with the items' exact dtypes.
        self._empty = planning.empty_items_frame()
        self._engine.load_batch_data(BATCH_ID, self._empty)
        self.planned = planning.plan(suite.expectations, self._engine, self._calc, source=source, setting=setting)
        self._row = [p for p in self.planned if p.kind == "row"]
        self._whole = [p for p in self.planned if p.kind == "whole"]
        self._chunk_configs, self._rules = planning.chunk_metrics(self.planned)
        self._whole_columns = planning.columns_to_keep(self._whole)
        self._merged: dict[Any, Any] = {}
        self._kept: list[pa.Table] = []
        self._items = 0
        self._chunks = 0
        self._rejected_items = 0
        self._result: Any = None
        self._gates: list[str] | None = None
        self.result_json_path: Path | None = None
        self.data_docs_path: Path | None = None  # the Data Docs site's index.html
        self.data_docs_page: Path | None = None  # this run's validation page in that site

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str, report_dir: str | None = None, setting: str = "--expectations") -> SuiteValidator:
        """Load and check the suite at ``path`` now (ConfigError naming the file and the problem).

        ``report_dir`` is where the validation result JSON and the Data Docs go: a directory,
        or the report file's path (``out/report.parquet`` -> ``out/report.validation.json`` and
        ``out/report.data_docs/index.html``). None writes nothing.
        """
        data = read_suite_file(path, setting)
        suite = build_suite(data, str(path), setting)
        return cls(suite, source=str(path), report_dir=report_dir, setting=setting)

    # -- the Validator protocol ---------------------------------------------------------------

    def validate_chunk(self, items: pa.Table) -> pa.Array | None:
        """Reasons to reject each item (null where fine), or None when every item passes.

        A reason names each failed row-local expectation, e.g.
        ``expect_column_values_to_match_regex(viewerId)``, joined by "; ".
        """
        import numpy as np
        import pyarrow as pa

        from polyv_connector.checks import merge_reasons

        if self._gates is not None:
            raise RuntimeError("validate_chunk() called after finish()")
        n = items.num_rows
        if n == 0 and self._chunks:
            return None
        self._chunks += 1
        self._items += n
        errored = sum(bool(p.errors) for p in self.planned)
        resolved = self._resolve(items.select(list(ITEM_COLUMNS)).to_pandas(), self._chunk_configs)
        if sum(bool(p.errors) for p in self.planned) != errored:
            # Stop computing what failed: GX retries a failing metric three times per graph.
            self._chunk_configs, self._rules = planning.chunk_metrics(self.planned)
        row_numbers = items.column(ROW_NUMBER).to_numpy()
        self._fold(resolved, row_numbers)
        if self._whole_columns:
            self._kept.append(items.select(self._whole_columns).combine_chunks())

        reasons: list[pa.Array] = []
        for p in self._row:
            value = None if p.errors else resolved.get(p.condition.id)
            if value is None:
                continue  # its metrics failed: recorded by _resolve, reported at finish as a gate
            series = value[0]
            # The series covers the rows GX considered (non-null ones, those matching a
            # row_condition), indexed by their position in the chunk; True = unexpected.
            flagged = series.index.to_numpy()[series.to_numpy(dtype=bool, na_value=False)]
            if len(flagged):
                mask = np.zeros(n, dtype=bool)
                mask[flagged] = True
                reasons.append(pa.array(np.where(mask, p.label, None), pa.string()))
        if not reasons:
            return None
        merged = merge_reasons(*reasons)
        self._rejected_items += n - merged.null_count
        return merged

    def finish(self) -> list[str]:
        """Judge every expectation on the whole input; write the result JSON and Data Docs.

        Returns the run-gate failures (empty when the run may go on). Calling it again returns
        the same list.
        """
        if self._gates is not None:
            return list(self._gates)
        import pyarrow as pa

        if self._chunks == 0:  # empty input: table-level expectations still get their say
            self.validate_chunk(pa.Table.from_pandas(self._empty, preserve_index=False))
        evrs: dict[int, Any] = {}
        for p in self.planned:
            if p.kind != "whole":
                evrs[p.position] = self._judge(
                    p, {mc.id: self._merged.get(mc.id, merge.MISSING) for mc in p.deps.values()}
                )
        if self._whole:
            evrs.update(self._judge_whole())
        ordered = [evrs[p.position] for p in self.planned]
        self._gates = [
            g for p, evr in zip(self.planned, ordered, strict=True) if (g := _gate_reason(p, evr)) is not None
        ]
        self._kept = []
        run_time = dt.datetime.now(dt.UTC)
        meta = results.result_meta(
            self.suite.name,
            self.source,
            self.output_stem or self.suite.name,
            run_time,
            items=self._items,
            chunks=self._chunks,
            items_rejected=self._rejected_items,
        )
        self._result = results.suite_result(self.suite, ordered, meta)
        if self.output_dir is not None:
            self.result_json_path, self.data_docs_path, self.data_docs_page = results.write_outputs(
                self._result, self.suite, self.output_dir, self.output_stem, run_time
            )
            log.info(
                "expectations %s: %d gate failure(s); result JSON %s; Data Docs %s",
                self.suite.name,
                len(self._gates),
                self.result_json_path,
                self.data_docs_page,
            )
        return list(self._gates)

    def summary(self) -> dict[str, Any]:
        """``{"validation": {...}}``: strict JSON (no NaN), merged into the run summary.

        Per expectation: type, column, success, unexpected count, action (``reject_rows`` or
        ``gate``) and error; plus the gate failures and where the result files are.
        """
        return results.summary(
            self.planned,
            self._result,
            suite_name=self.suite.name,
            source=self.source,
            items=self._items,
            items_rejected=self._rejected_items,
            gate_failures=self.gate_failures,
            result_json_path=self.result_json_path,
            data_docs_path=self.data_docs_path,
            data_docs_page=self.data_docs_page,
        )

    @property
    def result(self) -> Any:
        """The ``ExpectationSuiteValidationResult`` (after :meth:`finish`), else None."""
        return self._result

    @property
    def gate_failures(self) -> list[str]:
        """The reasons :meth:`finish` returned (empty before it ran)."""
        return list(self._gates or [])

    @property
    def items_validated(self) -> int:
        return self._items

    @property
    def items_rejected(self) -> int:
        """Items some row-local expectation rejected."""
        return self._rejected_items

    # -- internals ----------------------------------------------------------------------------

    def _resolve(self, frame: Any, configs: list[Any]) -> dict[Any, Any]:
        """Resolve ``configs`` on ``frame`` in one GX metric graph; record per-metric failures."""
        self._engine.load_batch_data(BATCH_ID, frame)
        graph = self._calc.build_metric_dependency_graph(configs, RUNTIME_CONFIGURATION)
        resolved, aborted = self._calc.resolve_validation_graph(
            graph=graph, runtime_configuration=RUNTIME_CONFIGURATION, min_graph_edges_pbar_enable=0
        )
        if aborted:
            asked = {mc.id for mc in configs}
            message = {
                metric_id: str(getattr(info.get("exception_info"), "exception_message", info))
                for metric_id, info in aborted.items()
            }
            for p in self.planned:
                needed = [*p.deps.values(), *([p.condition] if p.condition is not None else [])]
                missing = [mc.id for mc in needed if mc.id in asked and mc.id not in resolved]
                if missing:
                    # The failed metric is either one of p's own or one they depend on.
                    found = [message[m] for m in missing if m in message] or sorted(set(message.values()))
                    p.errors.extend(m for m in dict.fromkeys(found) if m not in p.errors)
        return resolved

    def _fold(self, resolved: dict[Any, Any], row_numbers: Any) -> None:
        for metric_id, rule in self._rules.items():
            if metric_id not in resolved:
                continue
            value = resolved[metric_id]
            if metric_id.metric_name.endswith(".unexpected_index_list") and value:
                value = _to_row_numbers(value, row_numbers)
            self._merged[metric_id] = rule(self._merged.get(metric_id, merge.MISSING), value)

    def _judge(self, p: Planned, metrics: dict[Any, Any]) -> Any:
        """GX's verdict on ``p`` from resolved (or folded) metric values."""
        from great_expectations.core.expectation_validation_result import ExpectationValidationResult
        from great_expectations.validator.exception_info import ExceptionInfo

        if not p.errors and any(v is merge.MISSING for v in metrics.values()):
            p.errors.append("its metrics could not be computed")
        if not p.errors:
            try:
                return p.expectation.metrics_validate(
                    metrics=metrics,
                    runtime_configuration=copy.deepcopy(RUNTIME_CONFIGURATION),
                    execution_engine=self._engine,
                )
            except Exception as exc:  # an expectation's own _validate failing is a finding, not a crash
                p.errors.append(f"{type(exc).__name__}: {exc}")
        return ExpectationValidationResult(
            success=False,
            expectation_config=p.expectation.configuration,
            exception_info=ExceptionInfo(exception_traceback="", exception_message="; ".join(p.errors)),
        )

    def _judge_whole(self) -> dict[int, Any]:
        """Evaluate the whole-input expectations once, on the kept columns of every chunk."""
        import pyarrow as pa

        table = (
            pa.concat_tables(self._kept)
            if self._kept
            else pa.Table.from_pandas(self._empty[self._whole_columns], preserve_index=False)
        )
        self._kept = []
        frame = table.to_pandas()
        del table
        configs = {mc.id: mc for p in self._whole for mc in p.deps.values()}
        resolved = self._resolve(frame, list(configs.values()))
        row_numbers = frame[ROW_NUMBER].to_numpy()
        out = {}
        for p in self._whole:
            metrics = {}
            for name, mc in p.deps.items():
                value = resolved.get(mc.id, merge.MISSING)
                if name.endswith(".unexpected_index_list") and value not in (None, merge.MISSING):
                    value = _to_row_numbers(value, row_numbers)
                metrics[mc.id] = value
            out[p.position] = self._judge(p, metrics)
        # Leave an empty frame loaded, not the whole input.
        self._engine.load_batch_data(BATCH_ID, self._empty)
        return out


def _to_row_numbers(positions: list[Any], row_numbers: Any) -> list[Any]:
    """GX's partial unexpected index list (frame positions) as the items' source rowNumbers."""
    out = []
    for pos in positions:
        out.append(int(row_numbers[pos]) if isinstance(pos, int | float) and not isinstance(pos, bool) else pos)
    return out


def _gate_reason(p: Planned, evr: Any) -> str | None:
    """Why ``p`` stops the run, or None when it does not."""
    if p.errors:
        return f"{p.label} could not be evaluated: {'; '.join(p.errors)}"
    if evr.success:
        return None
    result = evr.result or {}
    if p.kind == "row":
        if p.mostly >= 1:
            return None  # its failing rows are rejected; the rejected-fraction ceiling is the gate
        pct = result.get("unexpected_percent")
        pct_text = f"{pct:.2f}%" if isinstance(pct, int | float) and math.isfinite(pct) else "too many"
        return (
            f"{p.label}: {pct_text} of the values are unexpected, more than the "
            f"{(1 - p.mostly) * 100:.2f}% allowed by mostly={p.mostly:g}"
        )
    if "observed_value" in result:
        return f"{p.label} failed: observed {_short(result['observed_value'])}"
    if "unexpected_count" in result:
        examples = result.get("partial_unexpected_list") or []
        return f"{p.label} failed: {result['unexpected_count']:,} unexpected values" + (
            f", e.g. {_short(examples[:3])}" if examples else ""
        )
    return f"{p.label} failed"


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
