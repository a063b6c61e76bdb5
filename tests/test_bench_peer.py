"""``bench/bench_peer.py``'s options and figures, without running either tool or making dlt's venv."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from bench.bench_peer import (
    MATCHED_IN_FLIGHT,
    ChildRun,
    RunFigures,
    command,
    medians,
    own_times,
    parse_args,
    ratios,
    run_child,
    summarize,
)


def test_a_subset_is_picked_by_its_options() -> None:
    args = parse_args(["--items", "200000", "--latency-ms", "50", "--pairs", "3", "--modes", "matched"])
    assert (args.items, args.latency_ms, args.pairs, args.modes) == ([200000], [50.0], 3, ["matched"])


def test_the_defaults_cover_both_sizes_latencies_and_modes() -> None:
    args = parse_args([])
    assert (args.items, args.latency_ms, args.pairs) == ([200000, 1000000], [50.0, 20.0], 3)
    assert args.modes == ["matched", "defaults"]


@pytest.mark.parametrize("argv", [["--modes", "fast"], ["--pairs", "0"], ["--items", "0"]])
def test_a_bad_option_is_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_matched_concurrency_sets_both_tools_to_the_same_in_flight() -> None:
    args = argparse.Namespace(rps=100.0, dlt_default_workers=9)
    ours = command("polyv-sync", "matched", args, Path("in.parquet"), Path("run"), "http://sim")
    peer = command("dlt", "matched", args, Path("in.parquet"), Path("run"), "http://sim")
    assert ours[ours.index("--concurrency") + 1] == str(MATCHED_IN_FLIGHT)
    assert peer[peer.index("--workers") + 1] == str(MATCHED_IN_FLIGHT)
    assert peer[peer.index("--file-rows") + 1] == "25000"


def test_defaults_leave_polyv_sync_alone_and_give_dlt_its_set_up_workers() -> None:
    args = argparse.Namespace(rps=100.0, dlt_default_workers=9)
    assert "--concurrency" not in command("polyv-sync", "defaults", args, Path("i"), Path("r"), "http://sim")
    peer = command("dlt", "defaults", args, Path("i"), Path("r"), "http://sim")
    assert peer[peer.index("--workers") + 1] == "9"


def test_a_run_is_measured_from_the_server_side_times() -> None:
    # Started at 100.0, exited at 104.0; saves arrived 100.5..102.4 and were answered by 102.5.
    saves = [(100.5, 100.6, 200), (101.0, 101.2, 200), (102.4, 102.5, 500)]
    child = ChildRun(started=100.0, exited=104.0, status=0, maxrss_kib=204_800, cpu_s=1.5, peak_anon_kib=102_400)
    r = summarize("dlt", "matched", 3000, 50.0, 1, child, 0.25, saves, 2)
    assert r.exit_code == 0 and r.wall_s == pytest.approx(4.0) and r.cpu_s == 1.5
    assert r.peak_rss_mb == pytest.approx(200.0) and r.peak_private_mb == pytest.approx(100.0)
    assert r.start_to_first_save_s == pytest.approx(0.5)
    assert r.last_answer_to_exit_s == pytest.approx(1.5)
    assert r.save_rps == pytest.approx(3 / 2.0)  # three saves between 100.5 and 102.5
    assert r.send_s == pytest.approx(2.0)
    assert (r.saves, r.saves_ok, r.peak_in_flight, r.server_cpu_s) == (3, 2, 2, 0.25)


def test_a_run_without_saves_has_no_server_side_times() -> None:
    child = ChildRun(started=0.0, exited=1.0, status=256, maxrss_kib=1024, cpu_s=0.1)
    r = summarize("polyv-sync", "matched", 10, 50.0, 1, child, 0.0, [], 0)
    assert r.exit_code == 1
    assert r.start_to_first_save_s is None and r.last_answer_to_exit_s is None and r.save_rps is None


def _run(tool: str, wall: float) -> RunFigures:
    return RunFigures(tool, "matched", 10, 50.0, 1, 0, wall, 1.0, 100.0, 60.0, 0.5, None, 1, 1, None, 1, 0.1, 1.0)


def test_the_ratio_is_ours_over_the_peers_median() -> None:
    med = medians([_run("polyv-sync", 3.0), _run("dlt", 4.0), _run("polyv-sync", 5.0), _run("dlt", 2.0)])
    assert med["polyv-sync"]["wall_s"] == 4.0 and med["dlt"]["wall_s"] == 3.0
    ratio = ratios(med)
    assert ratio["wall_s"] == pytest.approx(4.0 / 3.0)
    assert ratio["last_answer_to_exit_s"] is None  # unknown on both sides: no ratio


def test_a_childs_peak_memory_is_its_own_not_the_benchmarks(tmp_path: Path) -> None:
    # A child forked from this process would inherit its high-water mark (the test runner's);
    # through the small launcher, a shell's peak is a few MB.
    child = run_child(["/bin/sh", "-c", "exit 3"], {"PATH": "/usr/bin:/bin"}, tmp_path)
    assert child.status >> 8 == 3
    assert child.maxrss_kib < 40 * 1024
    assert child.started <= child.exited and child.cpu_s >= 0.0


def test_a_childs_own_anonymous_memory_is_sampled_apart_from_its_shared_libraries(tmp_path: Path) -> None:
    # 64 MB of its own, held for half a second: the sampler sees it; a shell's is a few MB.
    grows = [sys.executable, "-I", "-S", "-c", "import time; x = b'1' * (64 << 20); time.sleep(0.5)"]
    child = run_child(grows, {"PATH": "/usr/bin:/bin"}, tmp_path)
    assert child.status == 0 and 60 * 1024 <= child.peak_anon_kib <= child.maxrss_kib
    (tmp_path / "sh").mkdir()
    shell = run_child(["/bin/sh", "-c", "sleep 0.2"], {"PATH": "/usr/bin:/bin"}, tmp_path / "sh")
    assert 0 < shell.peak_anon_kib < 16 * 1024


def test_a_runs_own_times_are_read_from_its_summary_whatever_their_names() -> None:
    summary = {
        "runId": "r",
        "ok": True,
        "items": 200000,
        "durationSeconds": 2.8,
        "concurrency": 8,
        "phaseSeconds": {"readAndPlan": 0.4, "sending": 2.1, "label": "x", "flag": True},
        "counts": {"sent": 200000},
    }
    assert own_times(summary) == {
        "durationSeconds": 2.8,
        "concurrency": 8.0,
        "phaseSeconds.readAndPlan": 0.4,
        "phaseSeconds.sending": 2.1,
    }
