"""The distributed demo's claims (scripts/demo_distributed.py), on hand-made results: what counts
as "every source row reported exactly once per run" when Airflow retried a task."""

from __future__ import annotations

from collections import Counter

from scripts.demo_distributed import ACCOUNTS_DAG, DemoConfig, DemoResult, TaskRow

RUN = "manual__1"
SOURCE = Counter({("brand-a", "v1", "F"): 1, ("brand-a", "v2", "F"): 1, ("brand-b", "v1", "F"): 1})


def _task(label: str, host: str, run_id: str | None, state: str = "success", tries: int = 1) -> TaskRow:
    summary = {"runId": run_id, "counts": {"sent": 1}} if run_id else None
    return TaskRow(ACCOUNTS_DAG, RUN, f"sync_account[{label}]", label, host, state, tries, 1.0, summary)


def _result(tasks: list[TaskRow], rows: list[tuple[str, str, str, str]], **stats: int) -> DemoResult:
    report = [(app, viewer, field, run_id, RUN, "sent") for app, viewer, field, run_id in rows]
    return DemoResult(
        runs={ACCOUNTS_DAG: {"run_id": RUN, "state": "success"}},
        tasks=tasks,
        sim_stats={"peak_window_requests": 40, "blocked_responses": 0, **stats},
        source={ACCOUNTS_DAG: SOURCE},
        report={ACCOUNTS_DAG: report},
        config=DemoConfig(),
        worker_hosts=("w1", "w2"),
        worker_executed={"w1": 1, "w2": 1},
    )


def test_a_retry_appends_its_own_rows_and_only_the_final_tries_count() -> None:
    # brand-a's first try (runId a1) reported v1 before it failed; the retry (a2) reported both.
    rows = [("brand-a", "v1", "F", "a1"), ("brand-a", "v1", "F", "a2"), ("brand-a", "v2", "F", "a2")]
    rows.append(("brand-b", "v1", "F", "b1"))
    result = _result([_task("a", "w1", "a2", tries=2), _task("b", "w2", "b1")], rows)
    assert result.final_run_ids(ACCOUNTS_DAG) == {"a2", "b1"}
    assert result.reported(ACCOUNTS_DAG) == SOURCE
    assert all(result.checks().values()), result.checks()


def test_a_row_twice_in_one_try_or_missing_fails_the_claim() -> None:
    twice = [("brand-a", "v1", "F", "a1"), ("brand-a", "v1", "F", "a1"), ("brand-a", "v2", "F", "a1")]
    result = _result([_task("a", "w1", "a1"), _task("b", "w2", "b1")], twice)
    checks = result.checks()
    assert result.duplicates_within_a_try(ACCOUNTS_DAG) == 1
    assert not checks["no key twice within one try"]
    assert not checks["every source row reported exactly once per run"]  # and brand-b's row is missing


def test_one_worker_a_block_or_a_window_over_the_budget_fails_its_claim() -> None:
    rows = [("brand-a", "v1", "F", "a1"), ("brand-a", "v2", "F", "a1"), ("brand-b", "v1", "F", "b1")]
    one_worker = _result([_task("a", "w1", "a1"), _task("b", "w1", "b1")], rows)
    assert not one_worker.checks()["sync tasks ran on every worker"]
    limit = DemoConfig().window_limit  # 10 x 5/s + a tenth of a second's burst
    assert limit == 51
    over = _result([_task("a", "w1", "a1"), _task("b", "w2", "b1")], rows, peak_window_requests=limit + 1)
    assert not over.checks()["no 10-s window above the budget"]
    blocked = _result([_task("a", "w1", "a1"), _task("b", "w2", "b1")], rows, blocked_responses=1)
    assert not blocked.checks()["no block"]
