"""The client and the shared budget: a block POLYV answers is recorded for every run, and a
run whose budget says blocked answers "blocked" without sending anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyv_connector.budget import open_budget
from polyv_connector.config import Credentials, Secret
from polyv_connector.errors import RunAborted
from polyv_connector.simulator import PolyvSimulator, RateLimitConfig
from polyv_connector.transport.client import PolyvClient
from tests.budget.conftest import CTX, drop_redis_keys
from tests.budget.workers import client_once


@pytest.mark.parametrize("store", ["machine", "redis"])
def test_a_block_polyv_answers_one_run_stops_another_process_before_it_sends(
    runtime_dir: Path, store: str, request: pytest.FixtureRequest
) -> None:
    limit = RateLimitConfig(max_requests=3, window_s=10.0, block_s=300.0, block_http_status=429)
    with PolyvSimulator(apps={"acc1": "sec1", "acc2": "sec2"}, rate_limit=limit) as sim:
        url = request.getfixturevalue("redis_url") if store == "redis" else None
        if store == "redis":
            base_url = sim.base_url
            request.addfinalizer(lambda: drop_redis_keys(base_url))
        with (
            open_budget(url, api_base_url=sim.base_url, rate=50, run_id="first", max_rps=None) as budget,
            PolyvClient(Credentials("acc1", Secret("sec1"), sim.base_url), budget=budget) as client,
        ):
            for _ in range(3):
                client.list_fields()
            with pytest.raises(RunAborted) as info:
                client.list_fields()
            assert info.value.cause == "blocked"
            assert budget.blocked_until() is not None  # the client recorded it
            seen = sim.stats.api_requests
            assert seen == 4  # three admitted, the fourth answered with the block

            results = CTX.Queue()
            proc = CTX.Process(target=client_once, args=(url, sim.base_url, "acc2", "sec2", results))
            proc.start()
            other = results.get(timeout=60)
            proc.join(timeout=30)
            assert other == {"outcome": "blocked", "sent": 0}
            assert sim.stats.api_requests == seen  # nothing more reached POLYV

            budget.clear_block()
            sim.set_rate_limit(None)  # as if the 5 minutes were over
            client.list_fields()
            assert sim.stats.api_requests == seen + 1
