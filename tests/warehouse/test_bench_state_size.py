"""bench/bench_state_size.py stays runnable: it runs here on a tiny size (the figures are not judged)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.warehouse.support import PG_DSN

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.postgres
def test_bench_state_size_runs_on_a_tiny_size(pg_available: bool) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_state_size.py"), "--items", "3000", "--dsn", PG_DSN],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "v2 (texts, xxh3)" in proc.stdout and "v3 (compact)" in proc.stdout and "ratio" in proc.stdout
