"""The client against the simulator: signing at send time, re-signed on retry, paged field list."""

from __future__ import annotations

import email.utils
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from polyv_connector.batching import Batch, item_table
from polyv_connector.config import Credentials, Secret, SendOptions, SyncOptions
from polyv_connector.report import ParquetReport
from polyv_connector.run import sync
from polyv_connector.sender import BatchSender, Circuit
from polyv_connector.simulator import FaultConfig, PolyvSimulator
from polyv_connector.sources.parquet import ParquetSource
from polyv_connector.transport.client import PolyvClient
from polyv_connector.transport.retry import RetryPolicy
from tests.conftest import APP_ID, APP_SECRET, FAST, write_items


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


@pytest.fixture
def many_fields() -> Iterator[tuple[PolyvSimulator, Credentials, list[str]]]:
    """A simulator whose account has 2001 fields: three pages at the contract's 1000."""
    ids = [f"FIELD_{i:04d}" for i in range(2001)]
    with PolyvSimulator(apps={APP_ID: APP_SECRET}, fields=ids) as s:
        yield s, Credentials(APP_ID, Secret(APP_SECRET), s.base_url), ids


def _pages_asked(client: PolyvClient) -> list[tuple[str, str]]:
    """Record (pageNumber, pageSize) of every field-list request the client signs."""
    asked: list[tuple[str, str]] = []
    original = client._signed_query

    def spy(extra=None):
        if extra and "pageNumber" in extra:
            asked.append((extra["pageNumber"], extra["pageSize"]))
        return original(extra)

    client._signed_query = spy  # type: ignore[method-assign]
    return asked


@pytest.mark.parametrize(
    ("page_size", "pages"),
    [
        (None, [("1", "1000"), ("2", "1000"), ("3", "1000")]),  # the default: the contract's maximum
        (667, [("1", "667"), ("2", "667"), ("3", "667")]),  # the last page exactly full
        (500, [(str(n), "500") for n in range(1, 6)]),  # the last page holds one field
    ],
)
def test_list_fields_reads_every_page_once(many_fields, page_size, pages) -> None:
    sim, creds, ids = many_fields
    with PolyvClient(creds, FAST) as client:
        asked = _pages_asked(client)
        got = client.list_fields() if page_size is None else client.list_fields(page_size=page_size)
        assert asked == pages
        assert client.requests_sent == sim.stats.list_requests == sim.stats.list_ok == len(pages)
    assert [f["customFieldId"] for f in got] == ids  # every field, in order, exactly once


@pytest.mark.parametrize("page_size", [0, 1001])
def test_list_fields_refuses_a_page_size_outside_the_contract(sim, creds, page_size) -> None:
    with PolyvClient(creds, FAST) as client, pytest.raises(ValueError, match="page_size"):
        client.list_fields(page_size=page_size)
    assert sim.stats.api_requests == 0


def test_a_page_that_fails_is_retried_alone_and_adds_no_duplicates(many_fields) -> None:
    sim, creds, ids = many_fields
    with PolyvClient(creds, FAST) as client:
        asked = _pages_asked(client)
        exchange = client._exchange

        def fail_after_first_page(*args, **kwargs):
            answer = exchange(*args, **kwargs)
            if len(asked) == 1:  # the next request (page 2) meets a 503
                sim.set_faults(FaultConfig(unavailable_requests=1, retry_after="0"))
            return answer

        client._exchange = fail_after_first_page  # type: ignore[method-assign]
        waits: list[float] = []
        got = client.list_fields(sleep=waits.append)
    assert [p for p, _ in asked] == ["1", "2", "2", "3"] and waits == [0.0]
    assert sim.stats.list_requests == 4 and sim.stats.faults_5xx == 1
    assert Counter(f["customFieldId"] for f in got) == Counter(ids)


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
