"""bench/bench_report_indexes.py and bench/bench_retention.py stay runnable: each runs here on a
tiny size (the figures are not judged, only that both cases ran and printed their ratio)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.postgres
def test_bench_report_indexes_runs_on_a_tiny_size(pg_available: bool) -> None:
    out = _run("bench_report_indexes.py", "--rows", "3000", "--indexes", "run")
    assert "plain " in out and "indexed " in out and "indexed/plain time ratio" in out


@pytest.mark.slow
@pytest.mark.postgres
def test_bench_retention_runs_on_a_tiny_size(pg_available: bool) -> None:
    out = _run("bench_retention.py", "--old-runs", "2", "--rows-per-run", "2000")
    assert "report_plain" in out and "report_days" in out and "dropping day partitions" in out
