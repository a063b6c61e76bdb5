"""A hostile POLYV endpoint answering 50 MB bodies: read up to the 1 MiB cap, never more.

A tiny HTTP server on loopback answers every request (the saves and the field list) with a
50 MB body, with or without a ``Content-Length``. Each attempt fails as ``response_too_large``,
is retried like a 5XX, and the items end ``failed`` with that code; the body never reaches a
reason, and the connector's memory stays bounded while it talks to the server.
"""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from polyv_connector import Credentials, Secret, SendOptions, SyncOptions, reasons, sync
from polyv_connector.errors import RunAborted
from polyv_connector.model import MAX_RESPONSE_BYTES
from polyv_connector.report import ParquetReport
from polyv_connector.sources.parquet import ParquetSource
from polyv_connector.transport.client import PolyvClient
from tests.conftest import APP_ID, APP_SECRET, read_report, write_items

HUGE = 50 * 1024 * 1024
#: What the body is made of: a reason or log holding it would show it.
FILLER = b"HOSTILE-BODY-" * 5042  # ~64 KiB a chunk
FAST_TRIES = SendOptions(backoff_base_s=0.001, backoff_max_s=0.01, max_rps=140, timeout_s=10, max_attempts=3)


class _Hostile(BaseHTTPRequestHandler):
    """200 and 50 MB of JSON-looking text to every request; ``declared`` sends a Content-Length."""

    declared = True
    requests_seen = 0
    bytes_sent = 0

    def _answer(self) -> None:
        type(self).requests_seen += 1
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.declared:
            self.send_header("Content-Length", str(HUGE))
        else:
            self.send_header("Connection", "close")  # the body ends when the connection does
        self.end_headers()
        sent = 0
        try:
            self.wfile.write(b'{"code":200,"success":true,"data":"')
            while sent < HUGE:
                self.wfile.write(FILLER)
                sent += len(FILLER)
                type(self).bytes_sent += len(FILLER)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading at the cap and closed: what is expected
        self.close_connection = True

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(params=[True, False], ids=["content-length", "close-delimited"])
def hostile(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Handler", (_Hostile,), {"declared": request.param, "requests_seen": 0, "bytes_sent": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_saves_answered_with_50_mb_end_failed_as_response_too_large(hostile: str, tmp_path: Path) -> None:
    creds = Credentials(APP_ID, Secret(APP_SECRET), hostile)
    rows = [(f"v{i}", "PAY_STATUS", f"value {i}") for i in range(3)]
    source = ParquetSource(str(write_items(tmp_path / "in.parquet", rows)))
    options = SyncOptions(send=FAST_TRIES, check_fields=False)
    tracemalloc.start()
    try:
        result = sync(source, creds, options, ParquetReport(tmp_path / "report.parquet"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    report = read_report(tmp_path / "report.parquet")
    assert [r["status"] for r in report] == ["failed"] * 3
    assert {r["reasonCode"] for r in report} == {"response_too_large"}
    assert {r["attempts"] for r in report} == {3}  # retried like a 5XX, then failed
    for row in report:
        assert "HOSTILE-BODY" not in (row["reason"] or "") and len(row["reason"]) < 300, row["reason"]
        assert "1 MiB" in row["reason"]
    assert result.counts_by_reason == {"response_too_large": 3}
    # The run page's retries are counted under the code, not under the status (a 200).
    assert result.timeline is not None and set(result.timeline.retries_by_cause) == {"response_too_large"}
    assert "HOSTILE-BODY" not in str(result.to_dict())
    # 3 attempts of 50 MB were offered; what the run held at once stayed a few times the cap.
    assert peak < 8 * MAX_RESPONSE_BYTES, f"peak traced memory {peak / 2**20:.1f} MiB"
    assert reasons.BY_CODE["response_too_large"].status == "failed"


def test_a_field_list_answered_with_50_mb_stops_the_run_before_any_save(hostile: str) -> None:
    creds = Credentials(APP_ID, Secret(APP_SECRET), hostile)
    tracemalloc.start()
    try:
        with PolyvClient(creds, FAST_TRIES) as client, pytest.raises(RunAborted) as raised:
            client.list_fields(sleep=lambda s: None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raised.value.cause == "unavailable"
    assert "larger than 1 MiB" in str(raised.value) and "HOSTILE-BODY" not in str(raised.value)
    assert client.requests_sent == 3  # each try read at most the cap, then gave up
    assert peak < 8 * MAX_RESPONSE_BYTES, f"peak traced memory {peak / 2**20:.1f} MiB"
