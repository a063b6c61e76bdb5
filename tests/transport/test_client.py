"""The client against the simulator: signing at send time, re-signed on retry, paged field list."""

from __future__ import annotations

import email.utils
import time

import numpy as np
import pytest

from polyv_connector.batching import Batch, item_table
from polyv_connector.config import SendOptions, SyncOptions
from polyv_connector.engine import sync
from polyv_connector.report import ParquetReport
from polyv_connector.sender import BatchSender, Circuit
from polyv_connector.simulator import FaultConfig
from polyv_connector.sources.parquet import ParquetSource
from polyv_connector.transport.client import PolyvClient
from polyv_connector.transport.retry import RetryPolicy
from tests.conftest import write_items
from tests.test_engine import FAST


def test_every_retry_is_signed_again_with_a_fresh_timestamp(sim, creds) -> None:
    sim.set_faults(FaultConfig(error_rate=1.0))
    ticks = iter(range(0, 1000, 7))
    import time

    base = time.time()
    client = PolyvClient(creds, SendOptions(), clock=lambda: base + next(ticks))
    seen: list[dict[str, str]] = []
    original = client._signed_query

    def spy(extra=None):
        q = original(extra)
        seen.append(q)
        return q

    client._signed_query = spy  # type: ignore[method-assign]
    import pyarrow as pa

    batch = Batch("b", np.arange(1), item_table(pa.array(["v"]), pa.array(["PAY_STATUS"]), pa.array(["x"])))
    sender = BatchSender(client, RetryPolicy(max_attempts=3), Circuit(), sleep=lambda s: None, clock=lambda: base)
    [result] = sender.send(batch)
    assert result.status == "failed" and result.attempts == 3
    assert len({q["timestamp"] for q in seen}) == 3 and len({q["sign"] for q in seen}) == 3


def test_list_fields_reads_every_page(sim, creds) -> None:
    client = PolyvClient(creds, FAST)
    ids = [f["customFieldId"] for f in client.list_fields()]
    assert ids == ["PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER"]


def _one_item_batch() -> Batch:
    import pyarrow as pa

    return Batch("b", np.arange(1), item_table(pa.array(["v"]), pa.array(["PAY_STATUS"]), pa.array(["x"])))


def test_saves_wait_the_retry_after_of_a_503_instead_of_the_backoff(sim, creds) -> None:
    sim.set_faults(FaultConfig(unavailable_requests=2, retry_after="3"))
    waits: list[float] = []
    with PolyvClient(creds, FAST) as client:
        sender = BatchSender(client, RetryPolicy(5, base_s=0.001, cap_s=10.0), Circuit(), sleep=waits.append)
        [result] = sender.send(_one_item_batch())
    assert result.status == "sent" and result.attempts == 3
    assert waits == [3.0, 3.0]  # the backoff would have been at most 0.001 and 0.002


def test_a_retry_after_longer_than_the_cap_is_cut_to_the_cap(sim, creds) -> None:
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)  # the HTTP-date form
    sim.set_faults(FaultConfig(unavailable_requests=3, retry_after=later))
    waits: list[float] = []
    with PolyvClient(creds, FAST) as client:
        sender = BatchSender(client, RetryPolicy(3, base_s=0.001, cap_s=2.5), Circuit(), sleep=waits.append)
        [result] = sender.send(_one_item_batch())
    assert result.status == "failed" and "gave up after 3 attempts" in (result.reason or "")
    assert waits == [2.5, 2.5]


@pytest.mark.parametrize("check_fields", [True, False])
def test_a_sync_honours_retry_after_in_the_preflight_and_in_saves(tmp_path, sim, creds, check_fields) -> None:
    # Whichever call meets the 503s first (the field list, or the save without the preflight)
    # waits what they say: both go through the same retry loop.
    sim.set_faults(FaultConfig(unavailable_requests=2, retry_after="2"))
    waits: list[float] = []
    send = SendOptions(backoff_base_s=0.001, backoff_max_s=5.0, max_attempts=3, max_rps=140, timeout_s=5)
    src = write_items(tmp_path / "in.parquet", [("a", "PAY_STATUS", "1")])
    res = sync(
        ParquetSource(str(src)),
        creds,
        SyncOptions(send=send, check_fields=check_fields),
        ParquetReport(tmp_path / "r.parquet"),
        sleep=waits.append,
    )
    assert res.counts["sent"] == 1 and sim.stats.faults_5xx == 2
    assert (sim.stats.list_requests, sim.stats.save_requests) == ((3, 1) if check_fields else (0, 3))
    assert waits == [2.0, 2.0]
