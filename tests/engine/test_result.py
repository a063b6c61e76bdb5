"""The run's identity and result helpers in ``engine/result.py``."""

from __future__ import annotations

import re

from polyv_connector.engine.result import new_run_id
from polyv_connector.history import run_started


def test_run_ids_of_one_second_sort_by_their_start() -> None:
    # Two runs of one second were ordered by their random suffix: a report's rows grouped by
    # runId came back in a random order (a flaky check of the changes-only report).
    second = 1_796_544_000.0
    # Half a millisecond in: the clock's float never sits on a millisecond's edge.
    ids = [new_run_id(lambda t=second + (ms + 0.5) / 1000: t) for ms in (999, 0, 500, 1, 250)]
    assert sorted(ids) == [ids[1], ids[3], ids[4], ids[2], ids[0]]
    assert all(re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", i) for i in ids)
    assert {run_started(i) for i in ids} == {run_started(ids[0])}
    assert run_started(ids[0]) is not None


def test_a_run_id_at_the_edge_of_a_second_keeps_its_second_and_millisecond_together() -> None:
    assert new_run_id(lambda: 1_796_544_000.9999).startswith("20261206T080000Z-3e7")
    assert new_run_id(lambda: 1_796_544_001.0).startswith("20261206T080001Z-000")


def test_run_ids_of_one_millisecond_differ() -> None:
    assert len({new_run_id(lambda: 1_796_544_000.5) for _ in range(50)}) == 50
