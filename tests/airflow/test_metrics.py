"""``polyv.*`` metrics through Airflow's own ``Stats``: its real StatsD backend, initialised the
way Airflow's task runner does it, sending to a UDP socket this test reads (a fake StatsD)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polyv_connector.simulator import FaultConfig
from tests.airflow.support import PLANTED_SECRET, SAMPLE

pytestmark = pytest.mark.airflow


class FakeTI:
    def __init__(self) -> None:
        self.pushed: dict = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


class FakeStatsd:
    """A UDP socket standing in for a StatsD server: ``received()`` gives the lines so far."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.3)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []

    def received(self) -> list[str]:
        while True:
            try:
                self.lines.extend(self.sock.recv(65536).decode().splitlines())
            except TimeoutError:
                return list(self.lines)


@pytest.fixture
def statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStatsd]:
    """Airflow's StatsD metrics on, pointing at a :class:`FakeStatsd`."""
    from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger
    from airflow.sdk.observability import stats
    from airflow.sdk.observability.metrics import stats_utils

    server = FakeStatsd()
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(server.port))
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PREFIX", "airflow")
    # As airflow.sdk.execution_time.task_runner.main() does before running a task.
    stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
    try:
        yield server
    finally:
        server.sock.close()
        stats.initialize(factory=NoStatsLogger, export_legacy_names=False)


def _op(**kwargs: object):
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    return PolyvViewerFieldSyncOperator(task_id="sync", **kwargs)


def test_a_run_sends_items_requests_and_duration_to_statsd(sim, polyv_env, tmp_path, statsd):
    summary = _op(input_path=str(SAMPLE), report_path=str(tmp_path / "r.parquet")).execute(
        {"ti": FakeTI(), "run_id": "manual__m"}
    )
    assert summary["ok"]
    packets = statsd.received()
    assert "airflow.polyv.items.sent:400|c" in packets
    assert "airflow.polyv.items.rejected:3|c" in packets and "airflow.polyv.items.duplicate:1|c" in packets
    assert f"airflow.polyv.requests:{summary['requestsSent']}|c" in packets
    assert "airflow.polyv.runs.ok:1|c" in packets
    assert any(p.startswith("airflow.polyv.duration:") and p.endswith("|ms") for p in packets)
    assert not any("retries" in p or "blocks" in p for p in packets)  # nothing to count: nothing sent
    assert not any(PLANTED_SECRET in p for p in packets)


def test_retries_and_a_failed_run_are_counted(sim, polyv_env, tmp_path, statsd):
    from airflow.sdk.exceptions import AirflowException

    sim.set_faults(FaultConfig(error_rate=1.0))
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"viewerId": ["v1"], "customFieldId": ["PAY_STATUS"], "customFieldValue": ["x"]}), src)
    try:
        with pytest.raises(AirflowException):
            _op(input_path=str(src), report_path=str(tmp_path / "r.parquet"), max_attempts=3).execute(
                {"ti": FakeTI(), "run_id": "manual__m"}
            )
    finally:
        sim.set_faults(FaultConfig())  # the simulator is shared by the session: faults outlive reset()
    packets = statsd.received()
    assert "airflow.polyv.items.failed:1|c" in packets
    assert "airflow.polyv.requests:3|c" in packets and "airflow.polyv.retries:2|c" in packets
    assert "airflow.polyv.runs.failed:1|c" in packets


def test_metrics_never_fail_the_task(sim, polyv_env, tmp_path, monkeypatch):
    from polyv_connector.airflow import metrics

    def broken() -> object:
        raise RuntimeError("no metrics backend")

    monkeypatch.setattr(metrics, "_stats", broken)
    summary = _op(input_path=str(SAMPLE), report_path=str(tmp_path / "r.parquet")).execute(
        {"ti": FakeTI(), "run_id": "manual__m"}
    )
    assert summary["ok"]


def test_changes_by_kind_and_limit_breaches_are_counted(sim, polyv_env, tmp_path, statsd):
    from airflow.sdk.exceptions import AirflowFailException

    state = str(tmp_path / "state")
    rows = {"viewerId": [f"v{i}" for i in range(20)], "customFieldId": ["PAY_STATUS"] * 20}
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({**rows, "customFieldValue": [f"x{i}" for i in range(20)]}), src)
    _op(input_path=str(src), report_path=str(tmp_path / "a.parquet"), state_dir=state).execute(
        {"ti": FakeTI(), "run_id": "manual__m"}
    )
    assert "airflow.polyv.changes.new:20|c" in statsd.received()
    pq.write_table(pa.table({**rows, "customFieldValue": ["y"] * 20}), src)
    with pytest.raises(AirflowFailException):
        _op(
            input_path=str(src), report_path=str(tmp_path / "b.parquet"), state_dir=state, change_limit_min_items=1
        ).execute({"ti": FakeTI(), "run_id": "manual__m"})
    packets = statsd.received()
    assert "airflow.polyv.changes.changed:20|c" in packets and "airflow.polyv.limit_breaches:1|c" in packets
