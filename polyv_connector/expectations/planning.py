"""Which expectations of a suite are judged how, and which GX metrics that takes.

Planning happens once, when a suite is loaded, before any row is read:

* each expectation is bound to the items' batch and its columns are checked against the
  item columns (a misspelt column is a :class:`ConfigError`, not a run that checks nothing);
* GX lists the metrics it needs (at SUMMARY level) and builds their graph, which finds the
  expectations GX cannot evaluate on pandas;
* each expectation gets a :data:`Kind`: ``row`` (a column-map expectation whose verdict on a
  row depends on that row alone: its unexpected rows are rejected), ``table`` (its metrics
  fold exactly across chunks: judged once at the end on the folded values) or ``whole``
  (metrics with no exact fold: judged once on the whole input's kept columns).

Nothing here runs GX on data; :mod:`~polyv_connector.expectations.evaluation` does.
Great Expectations, pandas and pyarrow are imported inside the functions that need them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from polyv_connector.errors import ConfigError
from polyv_connector.expectations import merge

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.execution_engine.pandas_execution_engine import PandasExecutionEngine
    from great_expectations.validator.metrics_calculator import MetricsCalculator

Kind = Literal["row", "table", "whole"]

# Every chunk is loaded under this one batch id, so metric ids (and thus folds) line up.
BATCH_ID = "polyv_items"
ITEM_COLUMNS = ("rowNumber", "viewerId", "customFieldId", "customFieldValue")
ROW_NUMBER = "rowNumber"

# The plan depends on the result format (SUMMARY adds the partial unexpected lists to an
# expectation's metrics), so it is fixed here and evaluation uses the very same one.
# SUMMARY without the index query (a string listing every failing index: O(failures)).
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": merge.PARTIAL_UNEXPECTED_COUNT,
    "return_unexpected_index_query": False,
}
RUNTIME_CONFIGURATION: dict[str, Any] = {"result_format": RESULT_FORMAT, "catch_exceptions": True}

# Map metrics whose condition looks at other rows (duplicates, order) without declaring a
# whole-column metric dependency, so the dependency check below cannot see it.
_WHOLE_COLUMN_MAP_METRICS = frozenset(
    {
        "column_values.unique",
        "compound_columns.unique",
        "multicolumn_values.unique",
        "column_values.increasing",
        "column_values.decreasing",
    }
)

# Expectations whose point is that a column may be missing: their column need not exist.
_PRESENCE_EXPECTATIONS = frozenset({"expect_column_to_exist"})


@dataclass
class Planned:
    """One expectation of the suite and how it is evaluated."""

    position: int  # 0-based, in suite order
    expectation: Any  # a GX Expectation, bound to BATCH_ID
    label: str  # e.g. "expect_column_values_to_match_regex(viewerId)"
    columns: tuple[str, ...]
    kind: Kind
    deps: dict[str, Any]  # top-level dependency name -> GX MetricConfiguration
    condition: Any = None  # row kind: the MetricConfiguration of GX's unexpected-row filter
    mostly: float = 1.0
    errors: list[str] = field(default_factory=list)

    @property
    def expectation_type(self) -> str:
        return str(self.expectation.expectation_type)

    @property
    def action(self) -> str:
        """``reject_rows`` or ``gate`` (row-local expectations with ``mostly`` < 1 do both)."""
        if self.kind != "row":
            return "gate"
        return "reject_rows" if self.mostly >= 1 else "reject_rows_and_gate"


def referenced_columns(kwargs: dict[str, Any]) -> tuple[str, ...]:
    """The item columns an expectation's kwargs name, in order, without repeats."""
    cols: list[str] = []
    for key in ("column", "column_A", "column_B"):
        if isinstance(kwargs.get(key), str):
            cols.append(kwargs[key])
    if isinstance(kwargs.get("column_list"), list):
        cols.extend(str(c) for c in kwargs["column_list"])
    return tuple(dict.fromkeys(cols))


def labels(expectations: list[Any]) -> list[str]:
    """``type(col, ...)`` per expectation; a repeated label gets its suite position appended."""
    base = []
    for exp in expectations:
        cols = referenced_columns(exp.configuration.kwargs)
        base.append(f"{exp.expectation_type}({', '.join(cols)})" if cols else str(exp.expectation_type))
    counts: dict[str, int] = {}
    for label in base:
        counts[label] = counts.get(label, 0) + 1
    return [label if counts[label] == 1 else f"{label} #{i + 1}" for i, label in enumerate(base)]


def empty_items_frame() -> pd.DataFrame:
    """A frame with no rows and the items' exact column dtypes (as the engine builds items)."""
    import pandas as pd

    return pd.DataFrame(
        {
            "rowNumber": pd.Series([], dtype="int64"),
            **{c: pd.Series([], dtype="str") for c in ITEM_COLUMNS[1:]},
        }
    )


def plan(
    expectations: list[Any],
    engine: PandasExecutionEngine,
    calc: MetricsCalculator,
    *,
    source: str,
    setting: str,
) -> list[Planned]:
    """Plan each expectation of a suite; ConfigError (naming ``setting``, ``source``) if one cannot run.

    ``engine`` must hold a batch with the items' dtypes under :data:`BATCH_ID` (some
    expectations read the column types while listing their metrics); ``calc`` is a GX
    ``MetricsCalculator`` on it, used only to build metric graphs, never to compute on data.
    """
    from great_expectations.expectations.registry import get_metric_kwargs
    from great_expectations.validator.metric_configuration import MetricConfiguration

    planned = []
    for i, (exp, label) in enumerate(zip(expectations, labels(expectations), strict=True)):
        where = f"expectation suite {source}: expectation #{i + 1} ({exp.expectation_type})"
        config = copy.deepcopy(exp.configuration)
        config.kwargs["batch_id"] = BATCH_ID
        bound = config.to_domain_obj()
        columns = referenced_columns(config.kwargs)
        unknown = [c for c in columns if c not in ITEM_COLUMNS]
        if unknown and bound.expectation_type not in _PRESENCE_EXPECTATIONS:
            raise ConfigError(
                setting,
                f"{where} refers to column(s) {unknown}; the items have the columns {list(ITEM_COLUMNS)}",
            )
        try:
            deps = bound.get_validation_dependencies(
                execution_engine=engine,
                runtime_configuration=copy.deepcopy(RUNTIME_CONFIGURATION),
            ).metric_configurations
            # Building the graph finds metrics GX cannot compute on pandas, before any row is read.
            calc.build_metric_dependency_graph(list(deps.values()), RUNTIME_CONFIGURATION)
        except Exception as exc:  # GX raises many unrelated types here; all mean "cannot run"
            raise ConfigError(setting, f"{where} cannot be evaluated on the items: {exc}") from None
        map_metric = getattr(bound, "map_metric", None)
        condition = None
        kind: Kind
        if map_metric and f"{map_metric}.unexpected_count" in deps and is_row_local(map_metric, bound, calc):
            name = f"{map_metric}.condition"
            kw = get_metric_kwargs(name, configuration=bound.configuration, runtime_configuration=RUNTIME_CONFIGURATION)
            condition = MetricConfiguration(name, kw["metric_domain_kwargs"], kw["metric_value_kwargs"])
            kind = "row" if foldable(deps, map_metric) else "whole"
        else:
            kind = "table" if foldable(deps, None) else "whole"
        mostly = getattr(bound, "mostly", 1.0)
        planned.append(
            Planned(
                i,
                bound,
                label,
                columns,
                kind,
                dict(deps),
                condition if kind == "row" else None,
                1.0 if mostly is None else float(mostly),
            )
        )
    return planned


def is_row_local(map_metric: str, bound: Any, calc: MetricsCalculator) -> bool:
    """Whether GX's condition for ``map_metric`` judges each row on its own.

    True unless it is a known whole-column metric or its dependency graph reaches a
    whole-column aggregate (z-scores need the column's mean, outliers its quartiles).
    """
    from great_expectations.expectations.registry import get_metric_kwargs
    from great_expectations.validator.metric_configuration import MetricConfiguration

    if map_metric in _WHOLE_COLUMN_MAP_METRICS:
        return False
    name = f"{map_metric}.condition"
    kw = get_metric_kwargs(name, configuration=bound.configuration, runtime_configuration=RUNTIME_CONFIGURATION)
    graph = calc.build_metric_dependency_graph(
        [MetricConfiguration(name, kw["metric_domain_kwargs"], kw["metric_value_kwargs"])], RUNTIME_CONFIGURATION
    )
    names = {e.left.metric_name for e in graph.edges}
    names |= {e.right.metric_name for e in graph.edges if e.right is not None}
    return all(n == name or n.startswith("table.") or n.endswith(".map") for n in names)


def _row_local_metrics(map_metric: str | None) -> set[str]:
    # column_values.nonnull is row-local too: map expectations count their non-null rows with it.
    return {"column_values.nonnull", *([map_metric] if map_metric else [])}


def foldable(deps: dict[str, Any], map_metric: str | None) -> bool:
    """Whether every top-level metric in ``deps`` has an exact fold across chunks."""
    row_local = _row_local_metrics(map_metric)
    return all(merge.rule_for(name, row_local) is not None for name in deps)


def chunk_metrics(planned: list[Planned]) -> tuple[list[Any], dict[Any, merge.MergeFn]]:
    """The metric configurations resolved on every chunk, and the fold of each (by id).

    Expectations that already failed to evaluate are left out: their verdict is already
    "could not be evaluated", and GX retries a failing metric three times per graph.
    """
    configs: dict[Any, Any] = {}
    rules: dict[Any, merge.MergeFn] = {}
    for p in planned:
        if p.kind == "whole" or p.errors:
            continue
        map_metric = getattr(p.expectation, "map_metric", None) if p.kind == "row" else None
        row_local = _row_local_metrics(map_metric)
        for name, mc in p.deps.items():
            configs[mc.id] = mc
            rule = merge.rule_for(name, row_local)
            assert rule is not None  # foldable() said so when the kind was chosen
            rules[mc.id] = rule
        if p.condition is not None:
            # Already a dependency of unexpected_count (same id): listing it costs nothing
            # and keeps GX's boolean series in the resolved metrics.
            configs[p.condition.id] = p.condition
    return list(configs.values()), rules


def columns_to_keep(whole: list[Planned]) -> list[str]:
    """Item columns the whole-input expectations read (rowNumber always: it names rows)."""
    if not whole:
        return []
    wanted = {ROW_NUMBER}
    for p in whole:
        kw = p.expectation.configuration.kwargs
        if not p.columns or kw.get("row_condition"):
            return list(ITEM_COLUMNS)  # table-wide, or filtered by a condition on any column
        wanted.update(c for c in p.columns if c in ITEM_COLUMNS)
    return [c for c in ITEM_COLUMNS if c in wanted]
