"""BatchSender: its result type, and a circuit that opens while a worker waits to retry."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from polyv_connector.batching import Batch, item_table
from polyv_connector.errors import RunAborted
from polyv_connector.reasons import stopped_reason
from polyv_connector.sender import BatchSender, Circuit, ItemsResult
from polyv_connector.simulator import FaultConfig
from polyv_connector.transport.client import PolyvClient
from polyv_connector.transport.retry import RetryPolicy
from tests.conftest import FAST


def test_items_result_is_built_by_keyword_only() -> None:
    with pytest.raises(TypeError):
        ItemsResult(np.arange(1), "sent", "b", 1, 0.0)  # type: ignore[misc]
    result = ItemsResult(indices=np.arange(1), status="sent", batch_id="b", attempts=1, synced_at=0.0)
    assert result.reason is result.http_status is result.error_code is result.request_id is None


def test_a_circuit_opened_during_the_backoff_stops_the_retry(sim, creds) -> None:
    sim.set_faults(FaultConfig(error_rate=1.0))
    circuit = Circuit()

    def sleep(_: float) -> None:
        circuit.open(RunAborted("blocked", "another worker hit the block"))

    batch = Batch("b", np.arange(1), item_table(pa.array(["v"]), pa.array(["PAY_STATUS"]), pa.array(["x"])))
    with PolyvClient(creds, FAST) as client:
        [result] = BatchSender(client, RetryPolicy(max_attempts=5), circuit, sleep=sleep).send(batch)
    assert result.status == "not_attempted" and result.attempts == 1
    # The stop's message is the run's (aborted), said once; the item names the cause.
    assert result.reason == stopped_reason("blocked") and result.reason_code == "blocked"
    assert sim.stats.save_requests == 1


def test_the_circuit_warns_once_for_its_stop_cause(caplog) -> None:
    circuit = Circuit()
    with caplog.at_level("WARNING", logger="polyv_connector"):
        circuit.open(RunAborted("blocked", "POLYV rate limit hit"))
        circuit.open(RunAborted("blocked", "POLYV rate limit hit"))  # another worker, same block
        circuit.stop("SIGTERM")
    assert [r.getMessage() for r in caplog.records] == ["sending stops (blocked): POLYV rate limit hit"]


def test_retries_are_recorded_per_request_without_logging(sim, creds, caplog) -> None:
    from polyv_connector.timeline import TimelineRecorder

    sim.set_faults(FaultConfig(error_rate=1.0))
    timeline = TimelineRecorder(budget_rps=140.0)
    batch = Batch("b", np.arange(1), item_table(pa.array(["v"]), pa.array(["PAY_STATUS"]), pa.array(["x"])))
    with caplog.at_level("DEBUG", logger="polyv_connector"), PolyvClient(creds, FAST) as client:
        [result] = BatchSender(
            client, RetryPolicy(max_attempts=4), Circuit(), sleep=lambda s: None, timeline=timeline
        ).send(batch)
    assert result.status == "failed" and result.reason_code == "retries_exhausted"
    assert timeline.requests_total == 4 and timeline.retries_by_cause() == {"http_500": 3}
    # No per-request line from the client side (the simulator's own access log aside).
    assert not [r for r in caplog.records if r.name.startswith("polyv_connector") and ".simulator" not in r.name]
