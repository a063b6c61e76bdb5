"""Benchmark: N concurrent ``polyv-sync run`` processes on one machine-wide request budget.

For N = 1, 2, 4, 8 (``--sizes``), N real CLI processes, each syncing its own account, run at once
against one simulator (8 accounts, 20 ms latency, POLYV's limit of 1500 requests per 10 s per
IP) through one machine-wide budget of rate R (``--rps``, default 100/s) in a fresh runtime
directory per N. Each run gets ``ceil(R * seconds / N)`` save requests of work (``--batch-size``
items each), so a phase sends for about ``--seconds``.

Measured from the simulator, not from the runs' summaries: a sampler thread reads
``sim.requests_by_account`` (authenticated API requests per appId) every ``--sample`` seconds.
A run is *sending* from the first sample that shows it past its field-list preflight to the last
sample before its count stopped growing; the **common window** is where all N are sending (the
last start to the first finish: processes start up at different times on a loaded machine, and
an early run has the whole rate to itself until the others register). In that window:

* utilisation: all requests / (R x window), goal >= 90 %;
* fairness: each run's requests / all requests, goal within +-20 % of 1/N;
* bans: the simulator's ``blocked_responses`` must be 0 and its peak 10-s window <= 1500.

The runs' own summaries (``requestsSent`` / ``durationSeconds``) are printed too, but they
average over each run's whole life, start-up head start and lone tail included, so they say
little about sharing. What issue 22 asks is the fleet's rate from its **first save to its last**
as the server saw them (the simulator logs each save's arrival and answer): runs that start
together but plan or report for different times leave the budget idle there unless a run holds
a share only while it sends. ``--items`` sets the items per run (e.g. 1,000,000 with
``--batch-size 1000``), ``--pairs`` repeats each phase and ``--baseline-tree DIR`` runs each
phase a second time with polyv-sync imported from another source tree, alternating (before and
after a change, in one command). Last, the limiter's own cost: ``bench_budget.measure`` (8 spawned
processes calling ``acquire()`` on an unlimited machine-wide budget). Run:

    PYTHONPATH=. .venv/bin/python bench/bench_fleet.py [--rps 100] [--sizes 1,2,4,8] [--json out.json]
    PYTHONPATH=. .venv/bin/python bench/bench_fleet.py --sizes 2,4 --items 1000000 --batch-size 1000 \
        --limiter-seconds 0 --pairs 2 --baseline-tree /path/to/main

These machines are shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench.bench_budget import measure as measure_acquisitions
from bench.bench_peer import RecordingSimulator
from polyv_connector.simulator import FaultConfig, RateLimitConfig

REPO = Path(__file__).resolve().parent.parent
#: The tree a phase's runs import polyv-sync from: this one, or ``--baseline-tree``'s.
THIS, BASELINE = "this", "baseline"

FIELDS = ["PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER"]
ACCOUNTS = {f"fleet-{i}": f"fleet-secret-{i}-{i * 7919:05d}" for i in range(1, 9)}
POLYV_LIMIT = 1500  # requests per 10 s per IP
UTILISATION_GOAL = 0.90
FAIRNESS_TOLERANCE = 0.20
#: A run counts as sending once the simulator saw more than its preflight (one field-list GET).
STARTED_AFTER = 2


def write_input(path: Path, items: int, tag: str) -> None:
    table = pa.table(
        {
            "viewerId": [f"{tag}-viewer-{i // 4:07d}" for i in range(items)],
            "customFieldId": [FIELDS[i % 4] for i in range(items)],
            "customFieldValue": [f"值-{i % 977}" for i in range(items)],
        }
    )
    pq.write_table(table, path)


class Sampler:
    """Reads the simulator's per-account counters every ``interval`` s in a thread."""

    def __init__(self, sim: RecordingSimulator, interval: float) -> None:
        self.sim, self.interval = sim, interval
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-sampler", daemon=True)

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.sim.requests_by_account))
            next_t += self.interval
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.monotonic(), self.sim.requests_by_account))


def common_window(samples: list[tuple[float, dict[str, int]]], accounts: list[str]) -> tuple[int, int] | None:
    """Indices (first, last) of the samples bounding the period where every account was sending."""
    final = {a: samples[-1][1].get(a, 0) for a in accounts}
    all_started = [i for i, (_, c) in enumerate(samples) if all(c.get(a, 0) > STARTED_AFTER for a in accounts)]
    none_done = [i for i, (_, c) in enumerate(samples) if all(c.get(a, 0) < final[a] for a in accounts)]
    if not all_started or not none_done or none_done[-1] <= all_started[0]:
        return None
    return all_started[0], none_done[-1]


def fleet_rate(saves: list[tuple[float, float, int]], rps: float) -> dict[str, Any]:
    """Save requests per second between the fleet's first save (arrival) and its last (answer),
    as the server saw them, and that rate as a fraction of the budget ``rps``."""
    if not saves:
        return {"fleet_span_s": None, "fleet_saves": 0, "fleet_rps": None, "fleet_of_r": None}
    first = min(s[0] for s in saves)
    last = max(s[1] for s in saves)
    span = last - first
    rate = len(saves) / span if span > 0 else None
    return {
        "fleet_span_s": round(span, 2),
        "fleet_saves": len(saves),
        "fleet_rps": None if rate is None else round(rate, 1),
        "fleet_of_r": None if rate is None else round(rate / rps, 3),
    }


def run_phase(
    n: int, args: argparse.Namespace, tmp: Path, tree: str = THIS, inputs: dict[int, Path] | None = None
) -> dict[str, Any]:
    accounts = list(ACCOUNTS)[:n]
    if args.items:
        items_per_run = args.items
        requests_per_run = math.ceil(items_per_run / args.batch_size)
    else:
        requests_per_run = math.ceil(args.rps * args.seconds / n)
        items_per_run = requests_per_run * args.batch_size
    phase_dir = Path(tempfile.mkdtemp(prefix=f"n{n}-{tree}-", dir=tmp))
    runtime = phase_dir / "runtime"  # a fresh machine-wide budget for this N
    input_dir = phase_dir
    if inputs is not None:  # the same inputs for every phase of this N (--pairs, --baseline-tree)
        if n not in inputs:
            inputs[n] = Path(tempfile.mkdtemp(prefix=f"inputs-n{n}-", dir=tmp))
            for app_id in accounts:
                write_input(inputs[n] / f"{app_id}.parquet", items_per_run, app_id)
        input_dir = inputs[n]
    else:
        for app_id in accounts:
            write_input(phase_dir / f"{app_id}.parquet", items_per_run, app_id)
    pythonpath = args.baseline_tree if tree == BASELINE else str(REPO)
    limit = RateLimitConfig(max_requests=POLYV_LIMIT, window_s=10.0, block_s=300.0)
    sim = RecordingSimulator(
        apps=ACCOUNTS,
        fields=FIELDS,
        rate_limit=limit,
        faults=FaultConfig(latency_s=args.latency),
        record_batches=False,
    )
    load_before = os.getloadavg()[0]
    with sim, Sampler(sim, args.sample) as sampler:
        t0 = time.monotonic()
        procs = {}
        for app_id in accounts:
            env = {k: v for k, v in os.environ.items() if not k.startswith("POLYV_")}
            env.update(
                PYTHONPATH=pythonpath,
                POLYV_APP_ID=app_id,
                POLYV_APP_SECRET=ACCOUNTS[app_id],
                POLYV_API_BASE_URL=sim.base_url,
                POLYV_RUNTIME_DIR=str(runtime),
                POLYV_BUDGET_RPS=f"{args.rps:g}",
            )
            cmd = [
                sys.executable,
                "-m",
                "polyv_connector.cli",
                "run",
                "--input",
                str(input_dir / f"{app_id}.parquet"),
                "--report",
                str(phase_dir / f"{app_id}-report.parquet"),
                "--summary-json",
                str(phase_dir / f"{app_id}-summary.json"),
                "--batch-size",
                str(args.batch_size),
            ]
            procs[app_id] = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        outputs = {a: p.communicate(timeout=300) for a, p in procs.items()}
        wall = time.monotonic() - t0
    stats = sim.stats
    load_after = os.getloadavg()[0]
    failed = {a: outputs[a][1][-1500:] for a, p in procs.items() if p.returncode != 0}
    summaries = {a: json.loads((phase_dir / f"{a}-summary.json").read_text()) for a in accounts if a not in failed}

    samples = sampler.samples
    starts = {a: next((t - t0 for t, c in samples if c.get(a, 0) > STARTED_AFTER), None) for a in accounts}
    window = common_window(samples, accounts)
    result: dict[str, Any] = {
        "n": n,
        "tree": tree,
        **fleet_rate(list(sim.saves), args.rps),
        "rps": args.rps,
        "requests_per_run": requests_per_run,
        "items_per_run": items_per_run,
        "wall_s": round(wall, 2),
        "start_offsets_s": {a: None if s is None else round(s, 2) for a, s in starts.items()},
        "start_skew_s": None if None in starts.values() else round(max(starts.values()) - min(starts.values()), 2),  # type: ignore[type-var]
        "blocked_responses": stats.blocked_responses,
        "peak_10s_window": stats.peak_window_requests,
        "api_requests": stats.api_requests,
        "failed_runs": failed,
        "summaries": {
            a: {
                "requestsSent": s["requestsSent"],
                "durationSeconds": s["durationSeconds"],
                "avg_rps": round(s["requestsSent"] / s["durationSeconds"], 1) if s["durationSeconds"] else None,
            }
            for a, s in summaries.items()
        },
        "load_before": round(load_before, 2),
        "load_after": round(load_after, 2),
    }
    if window is None:
        result.update(window_s=0.0, utilisation=None, shares={}, fair=False)
        return result
    (t_a, c_a), (t_b, c_b) = samples[window[0]], samples[window[1]]
    span = t_b - t_a
    per_run = {a: c_b.get(a, 0) - c_a.get(a, 0) for a in accounts}
    total = sum(per_run.values())
    shares = {a: (v / total if total else 0.0) for a, v in per_run.items()}
    result.update(
        window_s=round(span, 2),
        window_from_s=round(t_a - t0, 2),
        window_requests=total,
        total_rps=round(total / span, 1) if span > 0 else None,
        utilisation=round(total / (args.rps * span), 3) if span > 0 else None,
        shares={a: round(s, 4) for a, s in shares.items()},
        share_vs_fair_min=round(min(shares.values()) * n, 3),
        share_vs_fair_max=round(max(shares.values()) * n, 3),
        fair=all(abs(s * n - 1) <= FAIRNESS_TOLERANCE for s in shares.values()),
    )
    return result


def print_table(phases: list[dict[str, Any]], rps: float) -> None:
    head = (
        f"{'N':>2} {'tree':<8} {'window s':>8} {'req/s':>7} {'of R':>6} {'share/fair min..max':>20} "
        f"{'vs N=1':>6} {'skew s':>6} {'peak10s':>7} {'blocked':>7} {'wall s':>6} {'load':>9}"
    )
    print(head)
    print("-" * len(head))
    base = next((p.get("total_rps") for p in phases if p["n"] == 1), None)
    for p in phases:
        p["total_rps_vs_n1"] = round(p["total_rps"] / base, 3) if base and p.get("total_rps") else None
        util = "-" if p.get("utilisation") is None else f"{100 * p['utilisation']:.1f}%"
        fair = (
            "-"
            if not p.get("shares")
            else f"{p['share_vs_fair_min']:.2f}..{p['share_vs_fair_max']:.2f} {'ok' if p['fair'] else 'NO'}"
        )
        rate = "-" if p.get("total_rps") is None else f"{p['total_rps']:.1f}"
        skew = "-" if p["start_skew_s"] is None else f"{p['start_skew_s']:.1f}"
        vs1 = "-" if p["total_rps_vs_n1"] is None else f"{p['total_rps_vs_n1']:.3f}"
        print(
            f"{p['n']:>2} {p['tree']:<8} {p['window_s']:>8.1f} {rate:>7} {util:>6} {fair:>20} {vs1:>6} {skew:>6} "
            f"{p['peak_10s_window']:>7} {p['blocked_responses']:>7} {p['wall_s']:>6.1f} "
            f"{p['load_before']:>4.1f}>{p['load_after']:<4.1f}"
        )
    print(
        f"goals: req/s >= {100 * UTILISATION_GOAL:.0f}% of R={rps:g}/s in the window where all N send; each share "
        f"within +-{100 * FAIRNESS_TOLERANCE:.0f}% of 1/N; blocked 0; peak 10-s window <= {POLYV_LIMIT}"
    )
    for p in phases:
        per_run = ", ".join(
            f"{a.split('-')[1]}:{s['requestsSent']}/{s['durationSeconds']:.1f}s={s['avg_rps']}"
            for a, s in p["summaries"].items()
        )
        print(f"  N={p['n']} runs' summaries (requestsSent/durationSeconds = req/s over the whole run): {per_run}")
        if p["failed_runs"]:
            print(f"  N={p['n']} FAILED runs: {p['failed_runs']}")


def print_fleet(phases: list[dict[str, Any]], rps: float) -> None:
    """The fleet's rate from its first save to its last, per phase; medians and ratios per N."""
    head = f"{'N':>2} {'tree':<8} {'pair':>4} {'first>last s':>12} {'saves':>6} {'req/s':>7} {'of R':>6} {'wall s':>6}"
    print(head)
    print("-" * len(head))
    for p in phases:
        of_r = "-" if p["fleet_of_r"] is None else f"{100 * p['fleet_of_r']:.1f}%"
        rate = "-" if p["fleet_rps"] is None else f"{p['fleet_rps']:.1f}"
        span = "-" if p["fleet_span_s"] is None else f"{p['fleet_span_s']:.2f}"
        print(
            f"{p['n']:>2} {p['tree']:<8} {p.get('pair', 1):>4} {span:>12} {p['fleet_saves']:>6} {rate:>7} "
            f"{of_r:>6} {p['wall_s']:>6.1f}"
        )
    for n in sorted({p["n"] for p in phases}):
        med = {}
        for tree in (THIS, BASELINE):
            values = sorted(p["fleet_of_r"] for p in phases if p["n"] == n and p["tree"] == tree and p["fleet_of_r"])
            if values:
                med[tree] = values[len(values) // 2] if len(values) % 2 else sum(values[len(values) // 2 - 1 :][:2]) / 2
        line = f"N={n} median of R from first to last save: " + ", ".join(f"{t} {100 * v:.1f}%" for t, v in med.items())
        if len(med) == 2 and med[BASELINE]:
            line += f"; ratio this/baseline {med[THIS] / med[BASELINE]:.3f}"
        print(line + f" (goal >= 85% of R={rps:g}/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rps", type=float, default=100.0, help="the budget's rate R, requests/s (max 140)")
    parser.add_argument("--sizes", default="1,2,4,8", help="numbers of concurrent runs (at most 8)")
    parser.add_argument("--seconds", type=float, default=16.0, help="sending time per phase at rate R")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.02, help="simulator latency per request, s")
    parser.add_argument("--sample", type=float, default=0.25, help="sampling interval of the simulator's counts, s")
    parser.add_argument("--limiter-seconds", type=float, default=3.0, help="0: skip the limiter's cost")
    parser.add_argument("--items", type=int, default=0, help="items per run (default: from --seconds)")
    parser.add_argument("--pairs", type=int, default=1, help="phases per N (and per tree)")
    parser.add_argument(
        "--baseline-tree",
        help="also run each phase with polyv-sync imported from this source tree (PYTHONPATH), alternating",
    )
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if not all(1 <= s <= len(ACCOUNTS) for s in sizes):
        parser.error(f"--sizes: each between 1 and {len(ACCOUNTS)}")
    started = time.monotonic()
    print(
        f"fleet: R={args.rps:g}/s, sizes {sizes}, ~{args.seconds:g} s of sending each, batch {args.batch_size}, "
        f"latency {1000 * args.latency:g} ms; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
        flush=True,
    )
    phases = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        trees = (THIS, BASELINE) if args.baseline_tree else (THIS,)
        inputs: dict[int, Path] = {}
        for pair in range(1, args.pairs + 1):
            for n in sizes:
                for tree in trees if pair % 2 else trees[::-1]:
                    phases.append({**run_phase(n, args, Path(tmp), tree, inputs), "pair": pair})
                    p = phases[-1]
                    print(
                        f"  N={n} {tree} pair {pair} done in {p['wall_s']:.1f} s: first>last save "
                        f"{p['fleet_span_s']} s, {p['fleet_rps']} req/s = {p['fleet_of_r']} of R",
                        flush=True,
                    )
        limiter: dict[str, Any] | None = None
        if args.limiter_seconds > 0:
            os.environ["POLYV_RUNTIME_DIR"] = str(Path(tmp) / "limiter")  # the spawned workers inherit it
            load = os.getloadavg()[0]
            rate = measure_acquisitions("machine", "", 8, args.limiter_seconds)
            single = measure_acquisitions("machine", "", 1, args.limiter_seconds)  # the baseline, same command
            limiter = {
                "procs": 8,
                "seconds": args.limiter_seconds,
                "acquisitions_per_s": round(rate, 1),
                "one_process_acquisitions_per_s": round(single, 1),
                "vs_one_process": round(rate / single, 2) if single else None,
                "vs_rate": round(rate / args.rps, 1),
                "load_before": round(load, 2),
                "load_after": round(os.getloadavg()[0], 2),
            }
    print()
    print_table(phases, args.rps)
    print()
    print_fleet(phases, args.rps)
    if limiter:
        print(
            f"limiter's own cost: {limiter['acquisitions_per_s']:.0f} acquisitions/s across 8 processes "
            f"({limiter['vs_rate']:.1f}x R; {limiter['vs_one_process']}x the same loop in 1 process: "
            f"{limiter['one_process_acquisitions_per_s']:.0f}/s; bench_budget.measure, machine-wide store, "
            "unlimited rate), "
            f"load {limiter['load_before']:.1f}>{limiter['load_after']:.1f}"
        )
    total = time.monotonic() - started
    print(f"total {total:.0f} s; load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rps": args.rps, "phases": phases, "limiter": limiter, "total_s": round(total, 1)}, indent=2)
            + "\n"
        )


if __name__ == "__main__":
    main()
