"""A run holds a share of the shared budget only while it sends: it joins at its first save (the
field list read before planning does not join) and leaves once no batch is left to send or
retry, before its report is finished; the machine-wide budget and a real Redis alike."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pytest

from polyv_connector import SyncOptions, sync
from polyv_connector.budget import SharedBudget, open_budget
from polyv_connector.budget.machine import MachineStore
from polyv_connector.config import Credentials, Secret
from polyv_connector.report import ParquetReport
from polyv_connector.simulator import PolyvSimulator
from polyv_connector.simulator.contract import SAVE_PATH, ApiRequest, Response
from polyv_connector.sources.parquet import ParquetSource
from tests.budget.conftest import drop_redis_keys
from tests.conftest import FAST, FIELDS, read_report, write_items

APP, SECRET = "join-app", "join-secret-7919"


class WatchingSimulator(PolyvSimulator):
    """Records, for each request it serves, which runs the budget's store holds at that moment."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.observer: SharedBudget | None = None
        self.seen: list[tuple[str, list[str]]] = []
        self._seen_lock = threading.Lock()

    def _handle(self, request: ApiRequest) -> Response:
        if self.observer is not None:
            runs = [r["run_id"] for r in self.observer.status()["runs"]]
            with self._seen_lock:
                self.seen.append(("save" if request.path == SAVE_PATH else "other", runs))
        return super()._handle(request)


class WatchedReport(ParquetReport):
    """A report that records whether the run still held a share when its last rows were written."""

    def __init__(self, path: Path, budget: SharedBudget) -> None:
        super().__init__(path)
        self.budget = budget
        self.registered_at_write: list[bool] = []

    def write(self, batch: pa.RecordBatch) -> None:
        self.registered_at_write.append(self.budget.registered)
        super().write(batch)


@pytest.mark.parametrize("store", ["machine", "redis"])
def test_a_run_joins_at_its_first_save_and_leaves_after_its_last_batch(
    tmp_path: Path, runtime_dir: Path, store: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_url") if store == "redis" else None
    rows = [(f"v{i}", FIELDS[i % 4], f"val{i}") for i in range(3000)]
    src = write_items(tmp_path / "in.parquet", rows)
    with WatchingSimulator(apps={APP: SECRET}, fields=FIELDS) as sim:
        if store == "redis":
            base_url = sim.base_url
            request.addfinalizer(lambda: drop_redis_keys(base_url))
        creds = Credentials(APP, Secret(SECRET), sim.base_url)
        with (
            open_budget(url, api_base_url=sim.base_url, rate=100, run_id="observer", max_rps=None) as observer,
            open_budget(url, api_base_url=sim.base_url, rate=100, run_id="the-run", max_rps=None) as budget,
        ):
            sim.observer = observer
            assert observer.status()["runs"] == []  # opening the budget joins nothing
            report = WatchedReport(tmp_path / "report.parquet", budget)
            opts = SyncOptions(send=FAST)
            result = sync(ParquetSource(str(src)), creds, opts, report, budget=budget, run_id="the-run")
            assert result.counts["sent"] == 3000
            # The field list read before planning held no share; every save was sent holding one.
            kinds = [kind for kind, _ in sim.seen]
            assert kinds[0] == "other" and kinds.count("save") == 3
            assert sim.seen[0][1] == []
            assert all(runs == ["the-run"] for kind, runs in sim.seen if kind == "save")
            # Left once no batch was left to send or retry: the report's last rows were written
            # without a share, and the budget is left with nobody registered while still open.
            assert report.registered_at_write and report.registered_at_write[-1] is False
            assert not budget.registered
            assert observer.status()["runs"] == []
            # Another run sending now has the whole rate.
            observer.register()
            assert observer.share == 100.0
        assert len(read_report(tmp_path / "report.parquet")) == 3000


def test_a_save_after_leaving_joins_again_and_the_share_is_split_only_among_senders(runtime_dir: Path) -> None:
    api = "http://127.0.0.1:8751"
    with (
        open_budget(None, api_base_url=api, rate=60, run_id="a", max_rps=None) as a,
        open_budget(None, api_base_url=api, rate=60, run_id="b", max_rps=None) as b,
    ):
        a.acquire(join=False)  # like the field list: no share taken
        assert not a.registered and a.status()["runs"] == []
        a.acquire()
        assert a.registered and a.share == 60.0
        b.acquire()
        a.refresh()
        assert (a.share, b.share) == (30.0, 30.0)
        b.leave()
        a.refresh()
        assert a.share == 60.0 and [r["run_id"] for r in a.status()["runs"]] == ["a"]
        b.acquire()  # a retry after leaving joins again
        assert b.registered and b.share == 30.0
        b.leave()
        b.leave()  # idempotent
    assert a.status  # closed budgets stay inspectable objects


def test_a_request_outside_a_share_still_takes_its_unit_of_the_shared_bucket(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    store = MachineStore(tmp_path / "b.sqlite3", "h:1", "--budget")
    budget = SharedBudget(store, host_key="h:1", rate=10.0, run_id="x", clock=lambda: now[0], sleep=sleep)
    with budget:
        for _ in range(21):
            budget.acquire(join=False)
        assert not budget.registered
    # 21 requests through a bucket of 10/s with a burst of 1: 2 s of (simulated) waiting.
    assert sum(slept) == pytest.approx(2.0, abs=0.15)
