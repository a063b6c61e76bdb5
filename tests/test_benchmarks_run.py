"""The benchmark scripts stay runnable: each runs here on tiny sizes (the figures are not judged)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.stack import free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_engine_runs_on_tiny_sizes() -> None:
    args = ["--rows", "3000", "--baseline-rows", "300", "--e2e-rows", "3000", "--latency-ms", "1"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_engine.py"), *args, "--port", str(free_port())],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "prepare  ratio" in proc.stdout and "e2e      ratio" in proc.stdout


@pytest.mark.slow
def test_bench_partitions_runs_on_tiny_sizes(tmp_path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "bench_partitions.py"),
            "--items",
            "3000",
            "--cache",
            str(tmp_path),
            "--state-items",
            "0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ratios against N=1" in proc.stdout
    # Every N's partitions together planned every item (the script checks, and prints each).
    assert proc.stdout.count("3,000") >= 1 and "  4   3 " in proc.stdout


def test_bench_hash_families_runs_on_a_tiny_size() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_hash_families.py"), "--items", "2000"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "xxh3 :" in proc.stdout and "md5  :" in proc.stdout and "ratio: md5 takes" in proc.stdout


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.mariadb
def test_bench_warehouses_runs_on_tiny_sizes() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_warehouses.py"), "--rows", "2000", "--sample-rows", "200"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for engine in ("postgresql", "mariadb", "duckdb"):
        assert f"== {engine}" in proc.stdout
    assert proc.stdout.count("report write:") == 3 and proc.stdout.count("rerun       :") == 3


def test_bench_changes_runs_on_a_tiny_size() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_changes.py"), "--items", "5000", "--repeat", "1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert "change kinds and their count" in out and "limits on, whole_source" in out


def test_bench_plan_runs_on_a_tiny_size() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_plan.py"), "--items", "2000"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ratio plan / dry run" in proc.stdout and "bytes per item" in proc.stdout


@pytest.mark.slow
@pytest.mark.postgres
def test_bench_dag_runs_on_tiny_sizes() -> None:
    """The warehouse DAG through Airflow, full and empty input: every run succeeds and is checked."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_dag.py"), "--items", "3000", "--pairs", "1", "--no-warm-up"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "this: task time" in proc.stdout and "!!" not in proc.stdout
