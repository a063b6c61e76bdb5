"""The client against the simulator: signing at send time, re-signed on retry, paged field list."""

from __future__ import annotations

import numpy as np

from polyv_connector.batching import Batch, item_table
from polyv_connector.config import SendOptions
from polyv_connector.sender import BatchSender, Circuit
from polyv_connector.simulator import FaultConfig
from polyv_connector.transport.client import PolyvClient
from polyv_connector.transport.retry import RetryPolicy
from tests.conftest import FAST


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
