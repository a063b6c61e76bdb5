"""An unusable budget is refused before anything is sent, and a Redis password never shows."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from polyv_connector.budget import api_host_key, open_budget
from polyv_connector.budget.base import SharedBudget, fair_shares
from polyv_connector.budget.machine import MachineStore
from polyv_connector.budget.redis import redacted
from polyv_connector.errors import ConfigError, DependencyUnavailable

API = "http://127.0.0.1:8750"
PASSWORD = "PLANTED-redis-pw-91c3"


def open_(url: str | None, **kw: object) -> SharedBudget:
    args: dict[str, object] = {"api_base_url": API, "rate": None, "run_id": "r1", "max_rps": None}
    args.update(kw)
    return open_budget(url, **args)  # type: ignore[arg-type]


def test_unreachable_redis_is_unavailable_naming_the_setting_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DependencyUnavailable) as info:
        open_(f"redis://:{PASSWORD}@127.0.0.1:1/0", setting_url="--budget")
    exc = info.value
    assert exc.setting == "--budget"
    assert str(exc).startswith("--budget: ")
    assert "127.0.0.1:1" in str(exc)
    shown = str(exc) + repr(exc) + "".join(traceback.format_exception(exc)) + caplog.text
    assert PASSWORD not in shown
    assert exc.__cause__ is None and exc.__suppress_context__


def test_a_password_redis_refuses_is_not_shown_either() -> None:
    # This Redis has no password: AUTH is refused; whatever the outcome, the password stays hidden.
    with pytest.raises((ConfigError, DependencyUnavailable)) as info:
        open_(f"redis://user:{PASSWORD}@127.0.0.1:6379/13")
    assert PASSWORD not in str(info.value) + "".join(traceback.format_exception(info.value))


def test_redacted_place_never_holds_the_password() -> None:
    assert redacted(urlsplit(f"redis://:{PASSWORD}@10.0.0.5:6380/2")) == "redis://***@10.0.0.5:6380/2"
    assert redacted(urlsplit("redis://127.0.0.1:6379/0")) == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:notaport/0",
        "redis://127.0.0.1:6379/zero",
        "redis:///0",
        "ftp://example.com/x",
        "file://host/dir",
        "just-a-path",
    ],
)
def test_malformed_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_(url, setting_url="budget_url")
    assert info.value.setting == "budget_url"


def test_unwritable_runtime_dir_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A path below a regular file can never be created, even as root (chmod would not stop root).
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ConfigError) as info:
        open_(f"file://{blocker}/budget")
    assert info.value.setting == "--budget"
    monkeypatch.setenv("POLYV_RUNTIME_DIR", str(blocker / "runtime"))
    with pytest.raises(ConfigError):
        open_(None)
    with pytest.raises(ConfigError):
        open_(f"sqlite://{blocker}/budget.sqlite3")


def test_explicit_file_and_sqlite_urls(tmp_path: Path) -> None:
    with open_(f"file://{tmp_path}/dir") as budget:
        budget.acquire()
        assert budget.status()["place"] == f"sqlite://{tmp_path}/dir/request-budget.sqlite3"
    with open_(f"sqlite://{tmp_path}/one.sqlite3") as budget:
        budget.acquire()
    assert (tmp_path / "one.sqlite3").exists()


@pytest.mark.parametrize("rate", [0, -1, 140.5, 1000, float("nan"), float("inf")])
def test_rate_out_of_range_is_a_config_error(rate: float, runtime_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        open_(None, rate=rate, setting_rate="--budget-rps")
    assert info.value.setting == "--budget-rps"


def test_default_rate_and_maximum(runtime_dir: Path) -> None:
    with open_(None) as budget:
        assert budget.rate == 100.0
    with open_(None, rate=140) as budget:
        assert budget.rate == 140.0
    with pytest.raises(ConfigError):
        open_(None, max_rps=0)


def test_host_key_includes_host_and_port() -> None:
    assert api_host_key("https://api.polyv.net") == "api.polyv.net:443"
    assert api_host_key("http://API.polyv.net/") == "api.polyv.net:80"
    assert api_host_key("http://127.0.0.1:8750") == "127.0.0.1:8750"
    with pytest.raises(ConfigError):
        api_host_key("not a url")


def test_fair_shares() -> None:
    assert fair_shares(90, {"a": None, "b": None, "c": None}) == {"a": 30, "b": 30, "c": 30}
    assert fair_shares(50, {"a": 5, "b": None, "c": None}) == {"a": 5, "b": 22.5, "c": 22.5}
    assert fair_shares(50, {"a": 100, "b": None}) == {"a": 25, "b": 25}
    assert fair_shares(50, {"a": 10, "b": 10}) == {"a": 10, "b": 10}  # both capped: 30/s unused


def test_status_is_json_and_close_releases_the_share_at_once(runtime_dir: Path) -> None:
    import json

    a = open_(None, run_id="a", rate=60).register()
    b = open_(None, run_id="b", rate=60, max_rps=10).register()
    a.refresh()
    assert a.share == 50.0
    status = json.loads(json.dumps(a.status()))
    assert status["host_key"] == "127.0.0.1:8750"
    assert status["rate_in_force"] == 60.0
    assert {r["run_id"]: r["share"] for r in status["runs"]} == {"a": 50.0, "b": 10.0}
    assert {r["pid"] for r in status["runs"]} == {__import__("os").getpid()}
    assert status["blocked"] is False
    b.close()
    a.refresh()
    assert a.share == 60.0
    assert [r["run_id"] for r in a.status()["runs"]] == ["a"]
    a.close()


def test_block_seconds_from_the_environment(runtime_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("POLYV_BLOCK_SECONDS", "2")
    with open_(None) as budget:
        until = budget.record_block()
        assert until == pytest.approx(time.time() + 2, abs=0.5)
        status = budget.status()
        assert status["blocked"] is True and status["blocked_until"]
        # A shorter block recorded later does not shorten the one in force.
        assert budget.record_block(time.time() + 1) == until
        budget.clear_block()
        assert budget.status()["blocked"] is False


def test_acquire_with_an_injected_clock_paces_at_the_share(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    store = MachineStore(tmp_path / "b.sqlite3", "h:1", "--budget")
    budget = SharedBudget(store, host_key="h:1", rate=10.0, run_id="x", clock=lambda: now[0], sleep=sleep)
    with budget:
        for _ in range(30):
            budget.acquire()
    # 30 requests at 10/s: about 3 s of (simulated) waiting, the slack of a few slots aside.
    assert 2.5 <= sum(slept) <= 3.0
