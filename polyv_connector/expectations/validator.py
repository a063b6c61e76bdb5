"""A Great Expectations suite as the engine's :class:`~polyv_connector.engine.plan.Validator`.

:class:`SuiteValidator` holds one run's state and wires the package's parts together:

* :mod:`~polyv_connector.expectations.planning` decides, once, how each expectation is judged
  (rejects rows, folds across chunks, or needs the whole input) and which metrics it needs;
* :mod:`~polyv_connector.expectations.evaluation` runs GX on each chunk (SUMMARY level),
  folds the metric values, turns GX's per-row conditions into per-row reasons, and lets GX
  judge every expectation at the end;
* :mod:`~polyv_connector.expectations.gates` words the verdicts that stop the run;
* :mod:`~polyv_connector.expectations.results` writes GX's result JSON and Data Docs and
  builds the compact summary.

Memory stays bounded by the chunk size, except for the columns whole-input expectations read
(uniqueness, means...): they are kept as compact Arrow arrays, about the size of the column's
text plus 8 bytes per item.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyv_connector.expectations import evaluation, gates, merge, planning, results
from polyv_connector.expectations.suite import build_suite, read_suite_file

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
        self.suite = suite
        self.source = source
        self.setting = setting
        self.output_dir, self.output_stem = results.output_location(report_dir, suite.name)
        self._evaluator = evaluation.Evaluator()
        self.planned = planning.plan(
            suite.expectations, self._evaluator.engine, self._evaluator.calc, source=source, setting=setting
        )
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
        if self._gates is not None:
            raise RuntimeError("validate_chunk() called after finish()")
        n = items.num_rows
        if n == 0 and self._chunks:
            return None
        self._chunks += 1
        self._items += n
        errored = sum(bool(p.errors) for p in self.planned)
        frame = items.select(list(planning.ITEM_COLUMNS)).to_pandas()
        resolved = self._evaluator.resolve(frame, self._chunk_configs, self.planned)
        if sum(bool(p.errors) for p in self.planned) != errored:
            # Stop computing what failed: GX retries a failing metric three times per graph.
            self._chunk_configs, self._rules = planning.chunk_metrics(self.planned)
        evaluation.fold(self._merged, self._rules, resolved, items.column(planning.ROW_NUMBER).to_numpy())
        if self._whole_columns:
            self._kept.append(items.select(self._whole_columns).combine_chunks())
        reasons = evaluation.row_reasons(self._row, resolved, n)
        if reasons is not None:
            self._rejected_items += n - reasons.null_count
        return reasons

    def finish(self) -> list[str]:
        """Judge every expectation on the whole input; write the result JSON and Data Docs.

        Returns the run-gate failures (empty when the run may go on). Calling it again returns
        the same list.
        """
        if self._gates is not None:
            return list(self._gates)
        import pyarrow as pa

        if self._chunks == 0:  # empty input: table-level expectations still get their say
            self.validate_chunk(pa.Table.from_pandas(self._evaluator.empty, preserve_index=False))
        evrs: dict[int, Any] = {}
        for p in self.planned:
            if p.kind != "whole":
                folded = {mc.id: self._merged.get(mc.id, merge.MISSING) for mc in p.deps.values()}
                evrs[p.position] = self._evaluator.judge(p, folded)
        if self._whole:
            evrs.update(self._evaluator.judge_whole(self._whole, self._kept, self._whole_columns))
        ordered = [evrs[p.position] for p in self.planned]
        self._gates = gates.gate_failures(self.planned, ordered)
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
            # Only this suite's verdict: the run's own gates (the rejected-fraction ceiling) are
            # judged after it, and the engine logs the outcome of every gate once.
            log.info(
                "expectations %s: %s item(s) rejected by row expectations; %s; result JSON %s; Data Docs %s",
                self.suite.name,
                f"{self._rejected_items:,}",
                f"{len(self._gates)} suite gate(s) failed" if self._gates else "the suite's gates passed",
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
