"""Running GX on item chunks: metric values per chunk, their fold, per-row reasons, verdicts.

GX stays the source of truth: every verdict comes from GX's own metric implementations and
its own ``Expectation._validate`` logic. What this module changes is *how often* and *on
what* GX computes, so that a million rows cost about what GX's SUMMARY mode costs:

* **Per chunk** (:meth:`Evaluator.resolve`), the metrics every expectation depends on are
  resolved by GX in one metric graph on a pandas frame of the chunk, at SUMMARY level
  (counts and the first 20 unexpected values; never the per-row dicts of COMPLETE mode,
  whose cost grows with the failures: ~15x ours on 1M items with 20% failing, see bench/).
  No data context is involved: GX's pandas execution engine and metrics calculator are
  driven directly, the same pieces a validation definition's run ends up calling.
* For a *row-local* column-map expectation (its verdict on a row depends on that row alone:
  regexes, value sets, lengths, nulls...), the same graph also holds GX's boolean
  ``<metric>.condition`` series, the vectorised filter behind ``unexpected_count``: its
  true positions are exactly the unexpected rows, so :func:`row_reasons` costs one
  ``numpy`` lookup and no second pass. Every failed expectation of a row is named.
* **Across chunks**, :func:`fold` combines the per-chunk metric values (``merge.py``: counts
  add up, min/max compare, partial lists concatenate), and :meth:`Evaluator.judge` lets GX
  judge each expectation on the folded values, as it would have on the whole input.
* **Whole-column** expectations (no exact fold: uniqueness, means, outliers...) are judged
  by :meth:`Evaluator.judge_whole` once, on the columns kept from every chunk.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from polyv_connector.expectations import merge
from polyv_connector.expectations.planning import (
    BATCH_ID,
    ROW_NUMBER,
    RUNTIME_CONFIGURATION,
    Planned,
    empty_items_frame,
)
from polyv_connector.expectations.suite import import_gx

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa


class Evaluator:
    """GX's pandas execution engine and metrics calculator for one run (GX imported here).

    The batch loaded in the engine is always the current chunk, or the empty items frame
    between uses, never a whole input that is no longer needed.
    """

    def __init__(self) -> None:
        import_gx()
        from great_expectations.execution_engine.pandas_execution_engine import PandasExecutionEngine
        from great_expectations.validator.metrics_calculator import MetricsCalculator

        # caching=False: every chunk is loaded under the same batch id (so metric ids, and thus
        # the folds, line up across chunks); a cache keyed by those ids would serve chunk 1's
        # values for chunk 2.
        self.engine = PandasExecutionEngine(caching=False)
        self.calc = MetricsCalculator(execution_engine=self.engine, show_progress_bars=False)
        # Some expectations (e.g. expect_column_values_to_be_of_type) read the column types
        # while planning: give them an empty frame with the items' exact dtypes.
        self.empty = empty_items_frame()
        self.engine.load_batch_data(BATCH_ID, self.empty)

    def resolve(self, frame: pd.DataFrame, configs: list[Any], planned: list[Planned]) -> dict[Any, Any]:
        """Resolve ``configs`` on ``frame`` in one GX metric graph.

        A metric GX fails to compute is recorded, with GX's message, in the ``errors`` of each
        expectation in ``planned`` that needed it; the others' values are returned by id.
        """
        self.engine.load_batch_data(BATCH_ID, frame)
        graph = self.calc.build_metric_dependency_graph(configs, RUNTIME_CONFIGURATION)
        resolved, aborted = self.calc.resolve_validation_graph(
            graph=graph, runtime_configuration=RUNTIME_CONFIGURATION, min_graph_edges_pbar_enable=0
        )
        if aborted:
            asked = {mc.id for mc in configs}
            message = {
                metric_id: str(getattr(info.get("exception_info"), "exception_message", info))
                for metric_id, info in aborted.items()
            }
            for p in planned:
                needed = [*p.deps.values(), *([p.condition] if p.condition is not None else [])]
                missing = [mc.id for mc in needed if mc.id in asked and mc.id not in resolved]
                if missing:
                    # The failed metric is either one of p's own or one they depend on.
                    found = [message[m] for m in missing if m in message] or sorted(set(message.values()))
                    p.errors.extend(m for m in dict.fromkeys(found) if m not in p.errors)
        return resolved

    def judge(self, p: Planned, metrics: dict[Any, Any]) -> Any:
        """GX's verdict (an ``ExpectationValidationResult``) on ``p`` from resolved or folded values.

        An expectation that could not be evaluated gets a failed result carrying its errors.
        """
        from great_expectations.core.expectation_validation_result import ExpectationValidationResult
        from great_expectations.validator.exception_info import ExceptionInfo

        if not p.errors and any(v is merge.MISSING for v in metrics.values()):
            p.errors.append("its metrics could not be computed")
        if not p.errors:
            try:
                return p.expectation.metrics_validate(
                    metrics=metrics,
                    runtime_configuration=copy.deepcopy(RUNTIME_CONFIGURATION),
                    execution_engine=self.engine,
                )
            except Exception as exc:  # an expectation's own _validate failing is a finding, not a crash
                p.errors.append(f"{type(exc).__name__}: {exc}")
        return ExpectationValidationResult(
            success=False,
            expectation_config=p.expectation.configuration,
            exception_info=ExceptionInfo(exception_traceback="", exception_message="; ".join(p.errors)),
        )

    def judge_whole(self, whole: list[Planned], kept: list[pa.Table], columns: list[str]) -> dict[int, Any]:
        """Verdicts (by suite position) on the whole-input expectations, from every chunk's kept ``columns``.

        ``kept`` is emptied as soon as it is concatenated, so the Arrow copy of the input is
        freed before GX runs on the pandas one.
        """
        import pyarrow as pa

        table = pa.concat_tables(kept) if kept else pa.Table.from_pandas(self.empty[columns], preserve_index=False)
        kept.clear()
        frame = table.to_pandas()
        del table
        configs = {mc.id: mc for p in whole for mc in p.deps.values()}
        resolved = self.resolve(frame, list(configs.values()), whole)
        row_numbers = frame[ROW_NUMBER].to_numpy()
        out = {}
        for p in whole:
            metrics = {}
            for name, mc in p.deps.items():
                value = resolved.get(mc.id, merge.MISSING)
                if name.endswith(".unexpected_index_list") and value not in (None, merge.MISSING):
                    value = to_row_numbers(value, row_numbers)
                metrics[mc.id] = value
            out[p.position] = self.judge(p, metrics)
        # Leave an empty frame loaded, not the whole input.
        self.engine.load_batch_data(BATCH_ID, self.empty)
        return out


def fold(
    merged: dict[Any, Any], rules: dict[Any, merge.MergeFn], resolved: dict[Any, Any], row_numbers: np.ndarray
) -> None:
    """Fold one chunk's ``resolved`` metric values into ``merged`` (by metric id), in place.

    ``row_numbers`` are the chunk's rowNumbers: GX's unexpected index lists hold positions in
    the chunk, and a person needs the source rows.
    """
    for metric_id, rule in rules.items():
        if metric_id not in resolved:
            continue
        value = resolved[metric_id]
        if metric_id.metric_name.endswith(".unexpected_index_list") and value:
            value = to_row_numbers(value, row_numbers)
        merged[metric_id] = rule(merged.get(metric_id, merge.MISSING), value)


def to_row_numbers(positions: list[Any], row_numbers: Any) -> list[Any]:
    """GX's partial unexpected index list (frame positions) as the items' source rowNumbers.

    ``row_numbers`` is typed Any, not ndarray: numpy's stubs refuse the float positions this
    accepts (as the code did before the split; GX gives ints for the items' RangeIndex).
    """
    out = []
    for pos in positions:
        out.append(int(row_numbers[pos]) if isinstance(pos, int | float) and not isinstance(pos, bool) else pos)
    return out


def row_reasons(rows: list[Planned], resolved: dict[Any, Any], n: int) -> pa.Array | None:
    """Per item of an ``n``-item chunk, the labels of the row expectations it fails ("; "-joined).

    Null where an item passes them all; None when every item passes.
    """
    import numpy as np
    import pyarrow as pa

    from polyv_connector.items.checks import merge_reasons

    reasons: list[pa.Array] = []
    for p in rows:
        value = None if p.errors else resolved.get(p.condition.id)
        if value is None:
            continue  # its metrics failed: recorded by resolve(), reported at finish as a gate
        series = value[0]
        # The series covers the rows GX considered (non-null ones, those matching a
        # row_condition), indexed by their position in the chunk; True = unexpected.
        flagged = series.index.to_numpy()[series.to_numpy(dtype=bool, na_value=False)]
        if len(flagged):
            labelled = np.full(n, None, dtype=object)
            labelled[flagged] = p.label
            reasons.append(pa.array(labelled, pa.string()))
    if not reasons:
        return None
    return merge_reasons(*reasons)
