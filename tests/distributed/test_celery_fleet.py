"""The connector on Airflow's CeleryExecutor with two workers, through the code of
``make demo-distributed`` (scripts/demo_distributed.py): three accounts as mapped tasks and, when
its DAG file is there, one account as partitions, all at once against the simulator, on one
Redis request budget."""

from __future__ import annotations

import pytest

from scripts.demo_distributed import ACCOUNTS, ACCOUNTS_DAG, PARTITIONED_DAG, WORKERS, DemoConfig, run_demo, task_table

pytestmark = [pytest.mark.distributed, pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(420)]


def test_accounts_and_partitions_on_two_celery_workers(fleet_services, capsys):
    result = run_demo(DemoConfig(), fail=pytest.fail, say=lambda line: None)
    table = task_table(result)
    with capsys.disabled():  # what ran where, in the test output (-s not needed)
        stats = {k: result.sim_stats.get(k) for k in ("api_requests", "peak_window_requests", "blocked_responses")}
        print(f"\n{table}\nsimulator: {stats}; window limit {result.config.window_limit}; {result.seconds}")

    # Both DAG runs succeeded, every mapped task too, each on its first try.
    assert {d: r["state"] for d, r in result.runs.items()} == dict.fromkeys(result.runs, "success"), table
    syncs = result.sync_tasks()
    assert syncs and all(t.state == "success" for t in syncs), table
    accounts = [t for t in syncs if t.dag_id == ACCOUNTS_DAG]
    assert sorted(t.label for t in accounts) == sorted(ACCOUNTS.values())  # one mapped task per account
    if result.config.with_partitioned:
        partitions = [t for t in syncs if t.dag_id == PARTITIONED_DAG]
        assert len(partitions) == result.config.partitions, table

    # The tasks ran on both workers (task_instance.hostname, one name per worker process).
    assert {t.hostname for t in syncs} == set(WORKERS), table
    # ...and each Celery worker's own log says it executed tasks (not only what Airflow recorded).
    assert all(result.worker_executed[w] >= 1 for w in WORKERS), result.worker_executed

    # Every source row is in the report exactly once per DAG run (the final tries' runIds), each
    # tagged with its account and the DAG run; no try reported a key twice.
    for dag_id, source in result.source.items():
        reported = result.reported(dag_id)
        assert reported == source, (dag_id, len(reported), len(source), (reported - source).most_common(3))
        assert result.duplicates_within_a_try(dag_id) == 0
        assert {r[4] for r in result.report[dag_id]} == {result.runs[dag_id]["run_id"]}
    assert {t.summary["appId"] for t in accounts if t.summary} == set(ACCOUNTS)
    assert sum(t.counts.get("sent", 0) for t in accounts) == sum(result.source[ACCOUNTS_DAG].values())

    # One budget for every worker: the simulator saw no 10-s window above it and no block, and
    # with the Redis budget no task warned that the budget is not shared.
    stats = result.sim_stats
    assert stats["peak_window_requests"] <= result.config.window_limit, stats
    assert stats["blocked_responses"] == 0, stats
    assert stats["save_requests"] >= sum(result.source[d].total() for d in result.source) / result.config.batch_size
    assert result.budget_warnings == 0
    assert result.secret_leaks == 0  # task logs, worker, scheduler and api-server logs
    assert all(result.checks().values()), result.checks()
