"""install_log_redaction: one idempotent set-up, and no signature in any urllib3 log line."""

from __future__ import annotations

import logging

import pytest

from polyv_connector.config import SendOptions
from polyv_connector.simulator import FaultConfig
from polyv_connector.transport.client import PolyvClient
from polyv_connector.transport.redact import URL_LOGGERS, RedactSignature, install_log_redaction
from polyv_connector.transport.retry import RetryPolicy
from tests.conftest import APP_SECRET


def test_install_is_idempotent_and_only_quiets_urllib3_when_asked() -> None:
    urllib3_logger = logging.getLogger("urllib3")
    before = urllib3_logger.level
    try:
        urllib3_logger.setLevel(logging.DEBUG)
        for _ in range(3):
            install_log_redaction(quiet=False)
        assert urllib3_logger.level == logging.DEBUG  # a library does not change the host's levels
        for name in URL_LOGGERS:
            assert sum(isinstance(f, RedactSignature) for f in logging.getLogger(name).filters) == 1
        install_log_redaction()
        install_log_redaction()
        assert urllib3_logger.level == logging.WARNING
        for name in URL_LOGGERS:
            assert sum(isinstance(f, RedactSignature) for f in logging.getLogger(name).filters) == 1
    finally:
        urllib3_logger.setLevel(before)


@pytest.mark.parametrize(
    ("message", "redacted"),
    [
        ("GET /list?appId=a&sign=0A1B2C&timestamp=1 HTTP/1.1", "GET /list?appId=a&sign=***&timestamp=1 HTTP/1.1"),
        ("url='/save?sign=ABCDEF'", "url='/save?sign=***'"),
        ("/save?SIGN=abc def", "/save?SIGN=*** def"),
        ("no signature here", "no signature here"),
    ],
)
def test_the_filter_rewrites_every_sign_value(message: str, redacted: str) -> None:
    record = logging.LogRecord("urllib3.connectionpool", logging.DEBUG, __file__, 1, "%s", (message,), None)
    assert RedactSignature().filter(record) and record.getMessage() == redacted


def test_debug_logs_of_real_requests_carry_no_signature(sim, creds, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="urllib3")
    sim.set_faults(FaultConfig(unavailable_requests=1, retry_after="0"))
    signs: list[str] = []
    with PolyvClient(creds, SendOptions()) as client:
        original = client._signed_query

        def spy(extra=None):
            query = original(extra)
            signs.append(query["sign"])
            return query

        client._signed_query = spy  # type: ignore[method-assign]
        assert len(client.list_fields(retry=RetryPolicy(3, 0.0, 0.0), sleep=lambda s: None)) == 4
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert sum("custom-field/list" in line for line in lines) == 2 == len(signs)  # the 503, then the page
    assert all("sign=***" in line for line in lines if "custom-field" in line)
    assert not any(sign in line or APP_SECRET in line for line in lines for sign in signs)
