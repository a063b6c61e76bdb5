"""Fixtures of the budget tests: a private runtime directory, a Redis db, real spawned processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import REDIS_HOST, REDIS_PORT
from tests.services import redis_url as redis_url_of

REDIS_DB = 13  # dedicated to these tests; only keys of the fake API hosts below are touched
REDIS_URL = redis_url_of(REDIS_DB)
CTX = mp.get_context("spawn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runtime directory of this test only, as $POLYV_RUNTIME_DIR (spawned children inherit it)."""
    directory = tmp_path / "runtime"
    monkeypatch.setenv("POLYV_RUNTIME_DIR", str(directory))
    return directory


@pytest.fixture
def api() -> str:
    """A POLYV API base URL of this test only: its budget key is unique."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def redis_url(api: str, redis_available: bool) -> Iterator[str]:
    yield REDIS_URL
    drop_redis_keys(api)


def drop_redis_keys(api: str) -> None:
    """Delete the budget keys of the API host ``api`` from the test database."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    host_key = api.removeprefix("http://")
    for key in client.scan_iter(match=f"polyv-connector:budget:{host_key}:*"):
        client.delete(key)
    client.close()


class Runs:
    """Starts real processes (spawn) running ``target``, all released at the same moment."""

    def __init__(self) -> None:
        self.ready = CTX.Semaphore(0)
        self.go = CTX.Event()
        self.results: Any = CTX.Queue()
        self.procs: list[Any] = []

    def start(self, target: Callable[..., None], *args: Any) -> Any:
        proc = CTX.Process(target=target, args=(*args, self.ready, self.go, self.results), daemon=True)
        proc.start()
        self.procs.append(proc)
        return proc

    def release(self, timeout: float = 60.0) -> float:
        """Wait until every process has joined its budget, then let them all go; returns the time."""
        for _ in self.procs:
            assert self.ready.acquire(timeout=timeout), "a worker process did not start"
        self.go.set()
        return time.time()

    def collect(self, count: int, timeout: float = 60.0) -> dict[str, dict[str, Any]]:
        out = {}
        for _ in range(count):
            result = self.results.get(timeout=timeout)
            out[result["run_id"]] = result
        return out

    def stop(self) -> None:
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()


@pytest.fixture
def runs() -> Iterator[Runs]:
    r = Runs()
    yield r
    r.stop()


def run_id() -> str:
    return f"run-{uuid.uuid4().hex[:8]}-{os.getpid()}"
