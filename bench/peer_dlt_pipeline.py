"""The peer of ``bench_peer.py``: a dlt pipeline pushing a long-form Parquet file to POLYV.

What a data engineer would write instead of polyv-sync: ``@dlt.destination(batch_size=1000)``
posting each batch of 1000 items as one signed save request, the input read with pyarrow and
yielded as Arrow batches, Parquet load files of ``--file-rows`` rows (one load job each) and
``--workers`` load workers, so at most min(workers, files) requests are in flight. dlt has no
rate limit of its own: a token bucket shared by the worker threads keeps the pipeline at
``--rps`` requests per second.

It runs in its own virtual environment (``bench_peer.py`` makes it: dlt pinned, and this repo
installed there without its dependencies, only so that the request is signed by
``polyv_connector.signing``, the one place of POLYV's signature rule). The appSecret comes from
``POLYV_APP_SECRET``. Not imported by anything: ``bench_peer.py`` runs it as a script.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import dlt
import pyarrow.parquet as pq
import requests

from polyv_connector.signing import sign
from polyv_connector.simulator.contract import SAVE_PATH  # stdlib only, like the signing

COLUMNS = ("viewerId", "customFieldId", "customFieldValue")


class TokenBucket:
    """``rate`` tokens a second, at most ``capacity`` saved up; ``take()`` blocks for one."""

    def __init__(self, rate: float, capacity: float = 1.0) -> None:
        self.rate, self.capacity = rate, capacity
        self._tokens, self._last = capacity, time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", required=True, help="long-form Parquet: viewerId, customFieldId, customFieldValue")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--pipelines-dir", required=True, help="a fresh folder: nothing is skipped as loaded")
    parser.add_argument("--workers", type=int, default=9, help="load workers, 0: dlt's default")
    parser.add_argument("--file-rows", type=int, default=25_000, help="rows per load file (one load job each)")
    parser.add_argument("--rps", type=float, default=100.0, help="the token bucket's rate")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    # dlt reads its configuration from the environment; set before the pipeline is built.
    os.environ["DATA_WRITER__FILE_MAX_ITEMS"] = str(args.file_rows)
    if args.workers:
        os.environ["LOAD__WORKERS"] = str(args.workers)
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")

    secret = os.environ["POLYV_APP_SECRET"]
    url = args.base_url.rstrip("/") + SAVE_PATH
    bucket = TokenBucket(args.rps)
    local = threading.local()  # one keep-alive session per load worker thread

    def post(objects: list[dict[str, Any]]) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        bucket.take()
        params = {"appId": args.app_id, "timestamp": str(int(time.time() * 1000))}
        params["sign"] = sign(params, secret)
        response = session.post(url, params=params, json=objects, timeout=args.timeout)
        body = response.json()
        if not body.get("success"):
            raise RuntimeError(f"save failed: HTTP {response.status_code}, code {body.get('code')}")

    @dlt.destination(batch_size=1000, loader_file_format="parquet", name="polyv")
    def polyv(items: Any, table: Any) -> None:
        # Parquet load files hand over Arrow record batches; keep only the three API members.
        post(items.select(list(COLUMNS)).to_pylist())

    @dlt.resource(name="viewer_values", write_disposition="append")
    def viewer_values() -> Iterator[Any]:
        yield from pq.ParquetFile(args.input).iter_batches(batch_size=5_000, columns=list(COLUMNS))

    pipeline = dlt.pipeline(
        pipeline_name="polyv_peer",
        destination=polyv,
        pipelines_dir=args.pipelines_dir,
        dataset_name="polyv",
    )
    pipeline.run(viewer_values(), loader_file_format="parquet")


if __name__ == "__main__":
    main()
