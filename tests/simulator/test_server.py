"""Tests of the POLYV simulator: the contract it enforces, its faults, its CLI.

The clock is injected everywhere (no test sleeps to move time), and the signatures are computed
here by an implementation written from the API document, independent of both the simulator's
and the client's signer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from polyv_connector.simulator import (
    DEFAULT_FIELDS,
    FaultConfig,
    PolyvSimulator,
    RateLimitConfig,
)
from polyv_connector.simulator.cli import add_arguments, build_simulator
from polyv_connector.simulator.signing import expected_sign

SAVE = "/live/v4/user/custom-field/viewer-value/save"
LIST = "/live/v4/user/custom-field/list"
APP = "app1"
SECRET = "s3cret"
FIELDS = ["PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER"]
NOW = 1_700_000_000.0  # the document's example timestamp, 1700000000000 ms
REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """A clock the tests move by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def doc_sign(params: dict[str, str], secret: str, method: str = "MD5") -> str:
    """The rule of polyv-api.md §3, written out independently of any package code."""
    kept = sorted((k, v) for k, v in params.items() if k != "sign" and v not in (None, ""))
    text = secret + "".join(k + v for k, v in kept) + secret
    hasher = hashlib.sha256 if method == "SHA256" else hashlib.md5
    return hasher(text.encode("utf-8")).hexdigest().upper()


class Api:
    """A signed client of one simulator, built on one pooled requests.Session."""

    def __init__(self, sim: PolyvSimulator, clock: FakeClock, session: requests.Session) -> None:
        self.sim, self.clock, self.session = sim, clock, session

    def query(
        self,
        extra: dict[str, str] | None = None,
        *,
        app_id: str = APP,
        secret: str = SECRET,
        method: str = "MD5",
    ) -> dict[str, str]:
        params = {"appId": app_id, "timestamp": str(int(self.clock() * 1000)), **(extra or {})}
        if method == "SHA256":
            params["signatureMethod"] = "SHA256"
        params["sign"] = doc_sign(params, secret, method)
        return params

    def get(self, path: str, params: dict[str, str], **kwargs: Any) -> requests.Response:
        return self.session.get(self.sim.base_url + path, params=params, **kwargs)

    def post(self, path: str, params: dict[str, str], **kwargs: Any) -> requests.Response:
        return self.session.post(self.sim.base_url + path, params=params, **kwargs)

    def list_fields(self, **extra: str) -> requests.Response:
        return self.get(LIST, self.query(extra))

    def save(self, items: Any, **kwargs: Any) -> requests.Response:
        return self.post(SAVE, self.query(), json=items, **kwargs)


def item(viewer: str, value: str, field: str = "PAY_STATUS") -> dict[str, str]:
    return {"viewerId": viewer, "customFieldId": field, "customFieldValue": value}


def assert_v4_error(response: requests.Response, status: int, desc: str, code: int | None = None):
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    body = response.json()
    assert body["code"] == status
    assert body["status"] == ("fail" if status >= 500 else "error")
    assert body["success"] is False
    assert len(body["requestId"]) == 32
    assert body["error"]["desc"] == desc
    assert body["error"]["code"] == (status if code is None else code)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_api(clock: FakeClock) -> Iterator[Callable[..., Api]]:
    """Start simulators with the given settings; all are stopped after the test."""
    started: list[tuple[PolyvSimulator, requests.Session]] = []

    def factory(**kwargs: Any) -> Api:
        kwargs.setdefault("apps", {APP: SECRET, "other-app": "other-secret"})
        kwargs.setdefault("fields", FIELDS)
        kwargs.setdefault("clock", clock)
        sim = PolyvSimulator(**kwargs).start()
        session = requests.Session()
        started.append((sim, session))
        return Api(sim, clock, session)

    yield factory
    for sim, session in started:
        session.close()
        sim.stop()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


# --------------------------------------------------------------------------- signature


def test_signature_matches_the_documented_example() -> None:
    params = {"appId": "app1", "timestamp": "1700000000000"}
    documented = hashlib.md5(b"s3cretappIdapp1timestamp1700000000000s3cret").hexdigest().upper()
    assert doc_sign(params, "s3cret") == documented
    assert expected_sign(params, "s3cret") == documented


def test_valid_md5_signature_is_accepted(api: Api) -> None:
    # The document's own example, sent as is (the fake clock stands at its timestamp).
    params = {"appId": "app1", "timestamp": "1700000000000"}
    params["sign"] = hashlib.md5(b"s3cretappIdapp1timestamp1700000000000s3cret").hexdigest().upper()
    response = api.get(LIST, params)
    assert response.status_code == 200
    assert response.json()["success"] is True


def test_valid_sha256_signature_is_accepted(api: Api) -> None:
    response = api.get(LIST, api.query({"pageSize": "2"}, method="SHA256"))
    assert response.status_code == 200
    assert response.json()["data"]["pageSize"] == 2


def test_sha256_requires_signature_method_in_the_signed_string(api: Api) -> None:
    params = {"appId": APP, "timestamp": "1700000000000"}
    text = SECRET + "appId" + APP + "timestamp1700000000000" + SECRET  # signatureMethod left out
    params["sign"] = hashlib.sha256(text.encode()).hexdigest().upper()
    params["signatureMethod"] = "SHA256"
    assert_v4_error(api.get(LIST, params), 403, "invalid signature.")


def test_empty_params_do_not_take_part_in_the_signature(api: Api) -> None:
    params = api.query()
    params["pageNumber"] = ""  # sent, but empty: the rule drops it
    assert api.get(LIST, params).status_code == 200


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda q: q | {"sign": doc_sign(q, "wrong-secret")}, id="wrong-secret"),
        pytest.param(lambda q: q | {"sign": q["sign"].lower()}, id="lower-case-hex"),
        pytest.param(lambda q: q | {"pageSize": "3"}, id="unsigned-extra-param"),
        pytest.param(lambda q: q | {"timestamp": str(int(q["timestamp"]) + 1)}, id="changed"),
        pytest.param(lambda q: q | {"signatureMethod": "SHA256"}, id="md5-sign-as-sha256"),
        pytest.param(lambda q: q | {"sign": "签名"}, id="non-ascii-sign"),
    ],
)
def test_wrong_signature_is_rejected_with_403(api: Api, tamper: Callable[[dict[str, str]], dict[str, str]]) -> None:
    assert_v4_error(api.get(LIST, tamper(api.query())), 403, "invalid signature.")
    saved = api.post(SAVE, tamper(api.query()), json=[item("v", "x")])
    assert_v4_error(saved, 403, "invalid signature.")
    assert api.sim.values == {}


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("name", ["appId", "timestamp", "sign"])
@pytest.mark.parametrize("how", ["missing", "empty"])
def test_missing_param_is_rejected(api: Api, name: str, how: str) -> None:
    params = api.query()
    if how == "missing":
        del params[name]
    else:
        params[name] = ""
    assert_v4_error(api.get(LIST, params), 400, f"param should not be empty: {name}")


def test_unknown_app_is_rejected_with_20001(api: Api) -> None:
    params = api.query(app_id="nobody", secret="whatever")
    assert_v4_error(api.get(LIST, params), 400, "application not found.", 20001)


@pytest.mark.parametrize("offset_s", [-181.0, 181.0, 3600.0])
def test_timestamp_outside_three_minutes_is_rejected(
    api: Api,
    clock: FakeClock,
    offset_s: float,
) -> None:
    params = api.query()  # signed at NOW
    clock.advance(-offset_s)  # the server's clock is now offset_s away from the timestamp
    assert_v4_error(api.get(LIST, params), 400, "invalid timestamp.")


def test_timestamp_within_three_minutes_is_accepted(api: Api, clock: FakeClock) -> None:
    params = api.query()
    clock.advance(179.0)
    assert api.get(LIST, params).status_code == 200


@pytest.mark.parametrize("timestamp", ["1700000000", "17000000000000", "1700000000000.0", "abc"])
def test_timestamp_must_be_13_digit_milliseconds(api: Api, timestamp: str) -> None:
    params = {"appId": APP, "timestamp": timestamp}
    params["sign"] = doc_sign(params, SECRET)
    assert_v4_error(api.get(LIST, params), 400, "invalid timestamp.")


# --------------------------------------------------------------------------- field list


def test_field_list_pages(api: Api) -> None:
    first = api.list_fields(pageSize="3").json()["data"]
    second = api.list_fields(pageSize="3", pageNumber="2").json()["data"]
    assert (first["totalItems"], first["totalPages"], first["pageNumber"]) == (4, 2, 1)
    assert [f["customFieldId"] for f in first["contents"]] == FIELDS[:3]
    assert [f["customFieldId"] for f in second["contents"]] == FIELDS[3:]
    assert second["pageNumber"] == 2
    assert all(f["customFieldType"] == "text" and f["customFieldName"] for f in first["contents"])


def test_field_list_defaults_and_page_size_cap(api: Api) -> None:
    data = api.list_fields().json()["data"]
    assert (data["pageNumber"], data["pageSize"], data["totalPages"]) == (1, 10, 1)
    assert api.list_fields(pageSize="1000").status_code == 200
    assert_v4_error(api.list_fields(pageSize="1001"), 400, "param validate error", 20002)
    assert_v4_error(api.list_fields(pageNumber="0"), 400, "param validate error", 20002)


def test_default_fields() -> None:
    assert DEFAULT_FIELDS == ["PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER"]


# --------------------------------------------------------------------------- save


UNICODE_VALUES = [
    "已支付",
    "مدفوع",  # Arabic
    "\u200fשולם\u200f",  # RTL marks around Hebrew
    "💳✅👩‍💻",  # emoji with a zero-width joiner
    "line1\nline2\r\nline3\ttab",
    "e\u0301 vs \u00e9",  # must not be normalised
    "",  # an empty value is a value
    '"quoted" \\ back\\slash </script>',
]


def test_save_stores_unicode_byte_exact(api: Api) -> None:
    items = [item(f"viewer-{i}", value) for i, value in enumerate(UNICODE_VALUES)]
    response = api.save(items)
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 200
    assert body["status"] == "success"
    assert body["success"] is True
    assert body["data"] is None
    assert len(body["requestId"]) == 32
    stored = api.sim.values
    for i, value in enumerate(UNICODE_VALUES):
        assert stored[(APP, f"viewer-{i}", "PAY_STATUS")].encode("utf-8") == value.encode("utf-8")
    assert api.sim.received_batches == [items]


def test_save_is_an_upsert_last_write_wins(api: Api) -> None:
    assert api.save([item("v1", "未支付"), item("v1", "已支付", "VIP_LEVEL")]).status_code == 200
    assert api.save([item("v1", "已支付")]).status_code == 200
    assert api.sim.values == {
        (APP, "v1", "PAY_STATUS"): "已支付",
        (APP, "v1", "VIP_LEVEL"): "已支付",
    }
    stats = api.sim.stats
    assert (stats.save_requests, stats.save_ok, stats.items_stored) == (2, 2, 3)
    assert [len(batch) for batch in api.sim.received_batches] == [2, 1]


def test_values_are_kept_per_app(api: Api) -> None:
    assert api.save([item("v1", "a")]).status_code == 200
    params = api.query(app_id="other-app", secret="other-secret")
    assert api.post(SAVE, params, json=[item("v1", "b")]).status_code == 200
    assert api.sim.values == {
        (APP, "v1", "PAY_STATUS"): "a",
        ("other-app", "v1", "PAY_STATUS"): "b",
    }


def test_requests_are_counted_per_account(api: Api) -> None:
    assert api.sim.requests_by_account == {}
    assert api.save([item("v1", "a")]).status_code == 200
    assert api.list_fields().status_code == 200
    other = api.query(app_id="other-app", secret="other-secret")
    assert api.post(SAVE, other, json=[item("v1", "b")]).status_code == 200
    # Not counted: an unknown app and a bad signature (no account is proven).
    assert api.post(SAVE, api.query(app_id="nobody"), json=[item("v1", "c")]).status_code == 400
    assert api.post(SAVE, {**api.query(), "sign": "0" * 32}, json=[item("v1", "c")]).status_code == 403
    counts = api.sim.requests_by_account
    assert counts == {APP: 2, "other-app": 1}
    counts[APP] = 99  # a copy
    assert api.sim.requests_by_account[APP] == 2
    api.sim.reset()
    assert api.sim.requests_by_account == {}


def test_poison_value_rejects_the_whole_batch(make_api: Callable[..., Api]) -> None:
    api = make_api(faults=FaultConfig(poison_values=("BAD",)))
    response = api.save([item("v1", "ok"), item("v2", "BAD"), item("v3", "ok")])
    assert_v4_error(response, 400, "param validate error", 20002)
    assert api.sim.values == {}
    assert api.sim.received_batches == []
    assert api.sim.stats.save_rejected_4xx == 1
    assert api.save([item("v1", "ok")]).status_code == 200  # the good rows alone pass


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(item("v", "x", field="NO_SUCH_FIELD"), id="unknown-field"),
        pytest.param(item("v", "x", field="pay_status"), id="field-case"),
        pytest.param({"customFieldId": "PAY_STATUS", "customFieldValue": "x"}, id="no-viewer"),
        pytest.param(item("", "x"), id="empty-viewer"),
        pytest.param(
            {"viewerId": 42, "customFieldId": "PAY_STATUS", "customFieldValue": "x"},
            id="int-viewer",
        ),
        pytest.param(
            {"viewerId": "v", "customFieldId": "PAY_STATUS", "customFieldValue": 1},
            id="int-value",
        ),
        pytest.param(
            {"viewerId": "v", "customFieldId": "PAY_STATUS", "customFieldValue": None},
            id="null-value",
        ),
        pytest.param({"viewerId": "v", "customFieldId": "PAY_STATUS"}, id="no-value"),
        pytest.param(["v", "PAY_STATUS", "x"], id="not-an-object"),
    ],
)
def test_invalid_item_rejects_the_whole_batch(api: Api, bad: Any) -> None:
    response = api.save([item("good", "x"), bad])
    assert_v4_error(response, 400, "param validate error", 20002)
    assert api.sim.values == {}


@pytest.mark.parametrize(
    ("body", "desc"),
    [
        pytest.param(b"not json", "json format error", id="not-json"),
        pytest.param(b'{"viewerId": "v"}', "json format error", id="object"),
        pytest.param(b"\xff\xfe[]", "json format error", id="not-utf8"),
        pytest.param(b"", "json format error", id="no-body"),
        pytest.param(b"[]", "param should not be empty: body", id="empty-array"),
    ],
)
def test_malformed_body_is_rejected(api: Api, body: bytes, desc: str) -> None:
    headers = {"Content-Type": "application/json"}
    assert_v4_error(api.post(SAVE, api.query(), data=body, headers=headers), 400, desc)


def test_body_must_be_declared_json(api: Api) -> None:
    data = json.dumps([item("v", "x")]).encode()
    response = api.post(SAVE, api.query(), data=data, headers={"Content-Type": "text/plain"})
    assert_v4_error(response, 415, "content type not supported")


def test_more_than_max_items_is_rejected(api: Api) -> None:
    too_many = [item(f"v{i}", "x") for i in range(1001)]
    assert_v4_error(api.save(too_many), 400, "param length is incorrect: body")
    assert api.sim.values == {}
    assert api.save(too_many[:1000]).status_code == 200
    assert len(api.sim.values) == 1000


def test_max_items_is_configurable(make_api: Callable[..., Api]) -> None:
    api = make_api(max_items=2)
    response = api.save([item(f"v{i}", "x") for i in range(3)])
    assert_v4_error(response, 400, "param length is incorrect: body")


def test_unknown_path_and_wrong_method(api: Api) -> None:
    response = api.get("/live/v4/nothing", api.query())
    assert_v4_error(response, 404, "path not found")
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert_v4_error(api.get(SAVE, api.query()), 405, "method not supported")


# --------------------------------------------------------------------------- rate limit


def test_rate_limit_blocks_then_releases(make_api: Callable[..., Api], clock: FakeClock) -> None:
    api = make_api(rate_limit=RateLimitConfig(max_requests=5, window_s=10.0, block_s=300.0))
    for _ in range(5):
        assert api.list_fields().status_code == 200
    assert_v4_error(api.list_fields(), 403, "qps exceeds number of calls")
    clock.advance(299.0)  # well past the window, still inside the block
    assert_v4_error(api.save([item("v", "x")]), 403, "qps exceeds number of calls")
    assert api.sim.values == {}
    clock.advance(1.5)
    assert api.list_fields().status_code == 200
    stats = api.sim.stats
    assert (stats.blocked_responses, stats.save_rejected_4xx) == (2, 1)


def test_rate_limit_window_slides(make_api: Callable[..., Api], clock: FakeClock) -> None:
    api = make_api(rate_limit=RateLimitConfig(max_requests=5, window_s=10.0, block_s=300.0))
    for _ in range(5):
        assert api.list_fields().status_code == 200
    clock.advance(10.5)
    for _ in range(5):
        assert api.save([item("v", "x")]).status_code == 200  # both endpoints share the budget
    assert api.list_fields().status_code == 403


def test_rate_limit_comes_first_and_status_is_configurable(
    make_api: Callable[..., Api],
) -> None:
    limit = RateLimitConfig(max_requests=1, window_s=10.0, block_s=60.0, block_http_status=429)
    api = make_api(rate_limit=limit)
    assert api.list_fields().status_code == 200
    # Even an unsigned request is answered with the block: the limit is checked first.
    assert_v4_error(api.get(LIST, {}), 429, "qps exceeds number of calls")


def test_rate_limit_can_be_disabled(make_api: Callable[..., Api]) -> None:
    api = make_api(rate_limit=None)
    assert all(api.list_fields().status_code == 200 for _ in range(50))


# --------------------------------------------------------------------------- faults


def test_error_rate_gives_500_fail_body_and_stores_nothing(make_api: Callable[..., Api]) -> None:
    api = make_api(faults=FaultConfig(error_rate=1.0))
    assert_v4_error(api.save([item("v", "x")]), 500, "undefined error")
    assert api.sim.values == {}
    assert api.sim.stats.faults_5xx == 1
    assert api.list_fields().status_code == 200  # faults hit save requests only


def test_faults_come_after_authentication(make_api: Callable[..., Api]) -> None:
    api = make_api(faults=FaultConfig(error_rate=1.0))
    params = api.query(secret="wrong")
    assert_v4_error(api.post(SAVE, params, json=[item("v", "x")]), 403, "invalid signature.")


def test_gateway_error_rate_gives_502_html(make_api: Callable[..., Api]) -> None:
    api = make_api(faults=FaultConfig(gateway_error_rate=1.0))
    response = api.save([item("v", "x")])
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Bad Gateway" in response.text
    assert response.text.lstrip().startswith("<html>")
    assert api.sim.values == {}


def test_html_rate_gives_200_html(make_api: Callable[..., Api]) -> None:
    api = make_api(faults=FaultConfig(html_rate=1.0))
    response = api.save([item("v", "x")])
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError, match="Expecting value"):
        response.json()
    assert api.sim.values == {}


def test_reset_rate_resets_the_connection(make_api: Callable[..., Api]) -> None:
    api = make_api(faults=FaultConfig(reset_rate=1.0))
    with pytest.raises(requests.ConnectionError):
        api.save([item("v", "x")])
    assert api.sim.values == {}
    assert api.sim.stats.resets == 1
    api.sim.set_faults(FaultConfig())
    assert api.save([item("v", "x")]).status_code == 200  # the pooled session recovers


def test_hang_makes_the_client_time_out_and_stop_stays_prompt(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(faults=FaultConfig(hang_s=60.0))
    with pytest.raises(requests.Timeout):
        api.save([item("v", "x")], timeout=0.2)
    started = time.monotonic()
    api.sim.stop()
    assert time.monotonic() - started < 2.0
    assert api.sim.values == {}


def test_seeded_faults_are_reproducible(make_api: Callable[..., Api]) -> None:
    api = make_api(faults=FaultConfig(error_rate=0.5, seed=7), record_batches=False)

    def pattern() -> list[int]:
        return [api.save([item("v", "x")]).status_code for _ in range(20)]

    first = pattern()
    assert set(first) == {200, 500}
    api.sim.reset()
    assert pattern() == first


def test_unavailable_requests_answer_503_with_retry_after_then_recover(make_api: Callable[..., Api]) -> None:
    api = make_api(faults=FaultConfig(unavailable_requests=2, retry_after="7"))
    first, second = api.save([item("v", "x")]), api.list_fields()  # either endpoint counts
    for response in (first, second):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"
        assert response.headers["Content-Type"].startswith("text/html")
    assert api.save([item("v", "x")]).status_code == 200
    assert api.sim.stats.faults_5xx == 2 and api.sim.values == {(APP, "v", "PAY_STATUS"): "x"}
    api.sim.reset()  # the count starts again, like the seeded draws
    assert api.list_fields().status_code == 503
    api.sim.set_faults(FaultConfig(unavailable_requests=1))
    bare = api.list_fields()
    assert bare.status_code == 503 and "Retry-After" not in bare.headers
    assert api.list_fields().status_code == 200


def test_unavailable_requests_come_after_authentication(make_api: Callable[..., Api]) -> None:
    api = make_api(faults=FaultConfig(unavailable_requests=1, retry_after="7"))
    assert_v4_error(api.post(SAVE, api.query(secret="wrong"), json=[item("v", "x")]), 403, "invalid signature.")
    assert api.save([item("v", "x")]).status_code == 503  # the count was not spent on the refusal


def test_fault_config_validates() -> None:
    with pytest.raises(ValueError, match="unavailable_requests"):
        FaultConfig(unavailable_requests=-1)
    with pytest.raises(ValueError, match="retry_after"):
        FaultConfig(retry_after="5\r\nX-Evil: 1")
    with pytest.raises(ValueError, match="error_rate"):
        FaultConfig(error_rate=1.5)
    assert FaultConfig(poison_values=["a"]).poison_values == ("a",)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- inspection


def test_inspection_endpoints(api: Api) -> None:
    assert api.save([item("v2", "乙"), item("v1", "甲", "VIP_LEVEL")]).status_code == 200
    base = api.sim.base_url
    values = api.session.get(f"{base}/_sim/values", params={"appId": APP}).json()
    assert values == [
        {"viewerId": "v1", "customFieldId": "VIP_LEVEL", "customFieldValue": "甲"},
        {"viewerId": "v2", "customFieldId": "PAY_STATUS", "customFieldValue": "乙"},
    ]
    assert api.session.get(f"{base}/_sim/values", params={"appId": "other-app"}).json() == []
    everything = api.session.get(f"{base}/_sim/values").json()
    assert {entry["appId"] for entry in everything} == {APP}
    stats = api.session.get(f"{base}/_sim/stats").json()
    assert stats["save_ok"] == 1
    assert stats["items_stored"] == 2
    assert api.session.post(f"{base}/_sim/reset").json() == {"reset": True}
    assert api.sim.values == {}
    assert api.sim.stats.save_ok == 0


def test_reset_clears_values_stats_and_blocks(make_api: Callable[..., Api]) -> None:
    api = make_api(rate_limit=RateLimitConfig(max_requests=1, window_s=10.0, block_s=300.0))
    assert api.save([item("v", "x")]).status_code == 200
    assert api.list_fields().status_code == 403
    api.sim.reset()
    assert api.sim.values == {}
    assert api.sim.received_batches == []
    assert api.sim.stats.blocked_responses == 0
    assert api.list_fields().status_code == 200


def test_internal_error_is_answered_500(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(api.sim, "_list_fields", broken)
    assert_v4_error(api.list_fields(), 500, "undefined error")


def test_pooled_session_reuses_one_connection(api: Api) -> None:
    for _ in range(5):
        assert api.list_fields().status_code == 200
    assert api.sim.stats.connections_opened == 1


def test_context_manager_and_stopped_state(clock: FakeClock) -> None:
    with PolyvSimulator(clock=clock) as sim:
        assert sim.running
        assert sim.base_url.startswith("http://127.0.0.1:")
        params = {"appId": "demo-app", "timestamp": "1700000000000"}
        params["sign"] = doc_sign(params, "demo-secret")
        assert requests.get(sim.base_url + LIST, params=params, timeout=5).status_code == 200
    assert not sim.running
    with pytest.raises(RuntimeError):
        _ = sim.base_url


def test_logs_never_contain_the_sign_or_the_secret(
    api: Api,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="polyv_connector.simulator")
    params = api.query()
    assert api.get(LIST, params).status_code == 200
    # A malformed request line makes http.server log the whole line, query included.
    with socket.create_connection(("127.0.0.1", api.sim.port), timeout=5) as raw:
        raw.sendall(f"GET {LIST}?sign={params['sign']} HTTP/9.9\r\n\r\n".encode())
        assert b"505" in raw.recv(4096)  # answered (HTTP/0.9 style: no status line)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "<redacted>" in text
    assert params["sign"] not in text
    assert SECRET not in text


# --------------------------------------------------------------------------- throughput


@pytest.mark.slow
def test_throughput_smoke(make_api: Callable[..., Api]) -> None:
    api = make_api(rate_limit=None, record_batches=False)
    batch = [item(f"viewer-{i:05d}", f"已支付 {i}") for i in range(1000)]
    data = json.dumps(batch, ensure_ascii=False).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    for _ in range(200):
        assert api.post(SAVE, api.query(), data=data, headers=headers).status_code == 200
    stats = api.sim.stats
    assert (stats.save_ok, stats.items_stored) == (200, 200_000)
    assert len(api.sim.values) == 1000
    assert api.sim.received_batches == []


# --------------------------------------------------------------------------- CLI


def test_cli_arguments_build_the_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYV_APP_ID", "env-app")
    monkeypatch.setenv("POLYV_APP_SECRET", "env-secret")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--port",
            "0",
            "--fields",
            "A, B",
            "--error-rate",
            "0.25",
            "--latency-ms",
            "50",
            "--poison-value",
            "X",
            "--poison-value",
            "Y",
            "--max-requests",
            "7",
            "--seed",
            "3",
        ]
    )
    sim = build_simulator(args)
    assert sim.fields == ["A", "B"]
    expected = FaultConfig(error_rate=0.25, latency_s=0.05, poison_values=("X", "Y"), seed=3)
    assert sim.faults == expected
    defaults = parser.parse_args([])
    assert (defaults.host, defaults.port, defaults.max_requests) == ("127.0.0.1", 8750, 1500)


def test_cli_serves_until_sigterm() -> None:
    env = dict(os.environ, POLYV_APP_SECRET="cli-secret-value", PYTHONPATH=str(REPO_ROOT))
    command = [sys.executable, "-m", "polyv_connector.simulator", "--port", "0", "--app-id", "cli"]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            line = process.stdout.readline() if process.stdout else ""
            assert line.startswith("POLYV simulator listening on http://127.0.0.1:")
            assert "(appId=cli, fields=PAY_STATUS,VIP_LEVEL,COURSE_PROGRESS,MEMBER_TIER)" in line
            base_url = line.split()[4]
            params = {"appId": "cli", "timestamp": str(int(time.time() * 1000))}
            params["sign"] = doc_sign(params, "cli-secret-value")
            assert requests.get(base_url + LIST, params=params, timeout=5).status_code == 200
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "cli-secret-value" not in line + out + err
