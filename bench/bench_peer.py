"""Benchmark: ``polyv-sync run`` against the tool a data engineer would pick instead, dlt.

The peer (``bench/peer_dlt_pipeline.py``): dlt ``@dlt.destination(batch_size=1000)`` posting
signed save requests, Parquet load files of 25,000 rows, load workers, and a 100/s token bucket
(dlt has none). dlt is pinned (``dlt[parquet]==1.31.0``) and lives in its own virtual
environment, ``bench/.venv-dlt``, which this script makes on first use; this repo is installed
there without its dependencies only so that the peer signs with ``polyv_connector.signing``.
dlt is never a dependency of the package, and this script is not part of CI.

Both tools push the same long-form Parquet input (generated here) to the bundled simulator,
run in this process with a hook that records when each save request arrived and was answered
(POLYV's limit of 1500 requests per 10 s, ``--latency-ms`` per answer), alternating A B A B
(``--pairs``), for each input size, latency and mode:

* ``matched``: 8 requests in flight for both (polyv-sync ``--concurrency 8``, dlt 8 load workers);
* ``defaults``: polyv-sync with no concurrency option; dlt as the issue set it up
  (``--dlt-default-workers``, 9).

Per run: wall time, CPU (user+sys of the child and whatever it waited for), peak RSS (the
child's own: it is started from a small launcher, see ``LAUNCHER``) and its peak anonymous
memory (``anon MB``: the RSS less the shared libraries' pages, which vary with the page cache), time from
process start to the first save the server saw, from the last answer to exit, requests/s between
the first save's arrival and the last answer, the most saves the server had in flight at once, and
the server's CPU (this process's, which only serves while it waits for the child), so a saturated
server shows. Then the medians per tool and the ratios polyv-sync / dlt. Run:

    .venv/bin/python bench/bench_peer.py [--items 200000,1000000] [--latency-ms 50,20]
        [--pairs 3] [--modes matched,defaults] [--json out.json] [--baseline-tree DIR]

With ``--baseline-tree DIR`` the baseline is polyv-sync itself imported from another source tree
(``PYTHONPATH=DIR``), e.g. main's, instead of dlt: a change's before and after, alternating.

The machine is shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from polyv_connector.simulator import FaultConfig, PolyvSimulator, RateLimitConfig
from polyv_connector.simulator.contract import SAVE_PATH, ApiRequest, Response

REPO = Path(__file__).resolve().parent.parent
DLT_PIN = "dlt[parquet]==1.31.0"
DLT_VENV = REPO / "bench" / ".venv-dlt"
PEER_SCRIPT = REPO / "bench" / "peer_dlt_pipeline.py"
POLYV_SYNC = Path(sys.executable).parent / "polyv-sync"
APP_ID, APP_SECRET = "bench-peer", "bench-peer-secret-7919"
FIELDS = ["PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER"]
MATCHED_IN_FLIGHT = 8
FILE_ROWS = 25_000
TOOLS = ("polyv-sync", "dlt")
#: With ``--baseline-tree DIR``: polyv-sync against itself from another source tree (before/after).
BASELINE = "baseline"
MODES = ("matched", "defaults")


# ----------------------------------------------------------------- the server side


class RecordingSimulator(PolyvSimulator):
    """The bundled simulator, remembering when each save request arrived and was answered."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.saves: list[tuple[float, float, int]] = []  # (arrived, answered, HTTP status)
        self._in_flight = 0
        self.peak_in_flight = 0
        self._log_lock = threading.Lock()

    def clear_log(self) -> None:
        with self._log_lock:
            self.saves = []
            self._in_flight = self.peak_in_flight = 0

    def _handle(self, request: ApiRequest) -> Response:
        if request.path != SAVE_PATH:
            return super()._handle(request)
        arrived = time.time()
        with self._log_lock:
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            response = super()._handle(request)
        finally:
            with self._log_lock:
                self._in_flight -= 1
        self.saves.append((arrived, time.time(), response.status))
        return response


# ----------------------------------------------------------------- one run


@dataclass
class RunFigures:
    tool: str
    mode: str
    items: int
    latency_ms: float
    pair: int
    exit_code: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    peak_private_mb: float
    start_to_first_save_s: float | None
    last_answer_to_exit_s: float | None
    saves: int
    saves_ok: int
    save_rps: float | None
    peak_in_flight: int
    server_cpu_s: float
    load: float
    send_s: float | None = None  # the first save's arrival to the last answer
    #: polyv-sync's own account of where its time went (its summary JSON): what item 6 adds.
    own_times: dict[str, float] = field(default_factory=dict)


def summarize(
    tool: str,
    mode: str,
    items: int,
    latency_ms: float,
    pair: int,
    child: ChildRun,
    server_cpu_s: float,
    saves: list[tuple[float, float, int]],
    peak_in_flight: int,
) -> RunFigures:
    """The figures of one run from the child's times and rusage and the server's log."""
    started, exited = child.started, child.exited
    first = min((s[0] for s in saves), default=None)
    last = max((s[1] for s in saves), default=None)
    span = None if first is None or last is None else last - first
    return RunFigures(
        tool=tool,
        mode=mode,
        items=items,
        latency_ms=latency_ms,
        pair=pair,
        exit_code=os.waitstatus_to_exitcode(child.status),
        wall_s=exited - started,
        cpu_s=child.cpu_s,
        peak_rss_mb=child.maxrss_kib / 1024,
        peak_private_mb=child.peak_anon_kib / 1024,
        start_to_first_save_s=None if first is None else first - started,
        last_answer_to_exit_s=None if last is None else exited - last,
        saves=len(saves),
        saves_ok=sum(1 for s in saves if s[2] == 200),
        save_rps=len(saves) / span if span else None,
        peak_in_flight=peak_in_flight,
        server_cpu_s=server_cpu_s,
        load=os.getloadavg()[0],
        send_s=span,
    )


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


#: Runs the command and reports its times and rusage. A child's peak RSS on Linux counts the
#: memory of the process it was forked from (exec keeps the old image's high-water mark), so the
#: children are started from this small interpreter (-I -S: no site, about 10 MB), not from the
#: benchmark, which holds the simulator and grows run after run.
LAUNCHER = """
import json, os, resource, sys, threading, time
out, cmd = sys.argv[1], sys.argv[2:]
started = time.time()
pid = os.posix_spawn(cmd[0], cmd, os.environ)
peak_anon = [0]
def sample():
    while True:
        try:
            with open(f"/proc/{pid}/status") as status_file:
                for line in status_file:
                    if line.startswith("RssAnon:"):
                        peak_anon[0] = max(peak_anon[0], int(line.split()[1]))
        except (OSError, ValueError):
            return
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
_, status, usage = os.wait4(pid, 0)
exited = time.time()
waited = resource.getrusage(resource.RUSAGE_CHILDREN)  # the child and whatever it waited for
with open(out, "w") as f:
    json.dump({"started": started, "exited": exited, "status": status, "maxrss_kib": usage.ru_maxrss,
               "cpu_s": waited.ru_utime + waited.ru_stime, "peak_anon_kib": peak_anon[0]}, f)
"""


@dataclass(frozen=True)
class ChildRun:
    started: float  # epoch seconds, just before the spawn
    exited: float  # epoch seconds, just after the wait
    status: int  # wait status
    maxrss_kib: int
    cpu_s: float  # user + system of the child and of any process it waited for
    #: The child's own memory (anonymous: heap, arenas, stacks) at its peak, sampled every 5 ms:
    #: the RSS also counts the pages of shared libraries it maps, which depend on what the page
    #: cache holds of them (the same run measured 25 MB apart before and after other work).
    peak_anon_kib: int = 0


def run_child(cmd: list[str], env: dict[str, str], run_dir: Path) -> ChildRun:
    """Run ``cmd`` (an absolute program path first) through :data:`LAUNCHER`; output to ``run_dir/log``."""
    figures = run_dir / "child.json"
    with (run_dir / "log").open("wb") as out:
        subprocess.run(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, str(figures), *cmd],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
        )
    return ChildRun(**json.loads(figures.read_text()))


def command(
    tool: str, mode: str, args: argparse.Namespace, input_path: Path, run_dir: Path, base_url: str
) -> list[str]:
    """The command line of one run of ``tool`` in ``mode``."""
    if tool in ("polyv-sync", BASELINE):
        cmd = [
            str(POLYV_SYNC),
            "run",
            "--input",
            str(input_path),
            "--report",
            str(run_dir / "report.parquet"),
            "--summary-json",
            str(run_dir / "summary.json"),
        ]
        if mode == "matched":
            cmd += ["--concurrency", str(MATCHED_IN_FLIGHT)]
        return cmd
    workers = MATCHED_IN_FLIGHT if mode == "matched" else args.dlt_default_workers
    return [
        str(DLT_VENV / "bin" / "python"),
        str(PEER_SCRIPT),
        "--input",
        str(input_path),
        "--base-url",
        base_url,
        "--app-id",
        APP_ID,
        "--pipelines-dir",
        str(run_dir / "pipelines"),
        "--workers",
        str(workers),
        "--file-rows",
        str(FILE_ROWS),
        "--rps",
        f"{args.rps:g}",
    ]


def child_env(run_dir: Path, base_url: str, rps: float, tree: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYV_", "DLT_"))}
    if tree is not None:
        env["PYTHONPATH"] = tree  # polyv-sync imports the package from that tree
    env.update(
        POLYV_APP_ID=APP_ID,
        POLYV_APP_SECRET=APP_SECRET,
        POLYV_API_BASE_URL=base_url,
        POLYV_RUNTIME_DIR=str(run_dir / "runtime"),  # a budget of its own, not other runs'
        POLYV_BUDGET_RPS=f"{rps:g}",
        DLT_DATA_DIR=str(run_dir / "dlt-data"),
        RUNTIME__DLTHUB_TELEMETRY="false",
    )
    return env


def run_one(
    sim: RecordingSimulator,
    tool: str,
    mode: str,
    items: int,
    latency_ms: float,
    pair: int,
    args: argparse.Namespace,
    input_path: Path,
    tmp: Path,
) -> RunFigures:
    run_dir = tmp / f"{tool}-{mode}-{items}-{latency_ms:g}-{pair}"
    run_dir.mkdir()
    sim.reset()  # values, counters and the rate-limit window start empty
    sim.clear_log()
    cmd = command(tool, mode, args, input_path, run_dir, sim.base_url)
    # The benchmark process only serves while the child runs: its CPU is the server's.
    server_before = _cpu(resource.getrusage(resource.RUSAGE_SELF))
    tree = args.baseline_tree if tool == BASELINE else None
    child = run_child(cmd, child_env(run_dir, sim.base_url, args.rps, tree), run_dir)
    server_cpu = _cpu(resource.getrusage(resource.RUSAGE_SELF)) - server_before
    figures = summarize(tool, mode, items, latency_ms, pair, child, server_cpu, list(sim.saves), sim.peak_in_flight)
    summary = run_dir / "summary.json"
    if summary.exists():
        figures.own_times = own_times(json.loads(summary.read_text()))
    if figures.exit_code != 0 or sim.stats.items_stored < items:
        tail = (run_dir / "log").read_text(errors="replace")[-2000:]
        print(f"  !! {tool} exit {figures.exit_code}, {sim.stats.items_stored:,} of {items:,} items stored:\n{tail}")
    return figures


# ----------------------------------------------------------------- set-up


def ensure_dlt_venv() -> None:
    """Make ``bench/.venv-dlt`` with the pinned dlt and this repo (no dependencies) once."""
    python = DLT_VENV / "bin" / "python"
    check = [str(python), "-c", "import dlt, polyv_connector.signing; print(dlt.__version__)"]
    if python.exists():
        found = subprocess.run(check, capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == DLT_PIN.split("==")[1]:
            return
    print(f"making {DLT_VENV.relative_to(REPO)} with {DLT_PIN} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(DLT_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, DLT_PIN], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(REPO)], check=True)  # for polyv_connector.signing
    subprocess.run(check, check=True, capture_output=True)


def write_input(path: Path, items: int) -> None:
    """Long form, four fields per viewer, values of a few lengths (and some non-ASCII)."""
    viewers = pa.array([f"viewer-{i // len(FIELDS):08d}" for i in range(items)])
    fields = pa.array([FIELDS[i % len(FIELDS)] for i in range(items)])
    values = pa.array([f"值-{i % 977}" for i in range(items)])
    pq.write_table(pa.table({"viewerId": viewers, "customFieldId": fields, "customFieldValue": values}), path)


# ----------------------------------------------------------------- figures


METRICS = (
    ("wall_s", "wall s", "{:.2f}"),
    ("cpu_s", "CPU s", "{:.2f}"),
    ("peak_rss_mb", "RSS MB", "{:.0f}"),
    ("peak_private_mb", "anon MB", "{:.0f}"),
    ("start_to_first_save_s", "start>1st s", "{:.2f}"),
    ("last_answer_to_exit_s", "last>exit s", "{:.2f}"),
    ("send_s", "send s", "{:.2f}"),
    ("save_rps", "req/s", "{:.1f}"),
    ("server_cpu_s", "srv CPU s", "{:.2f}"),
)


def own_times(summary: dict[str, Any]) -> dict[str, float]:
    """The times and the concurrency a run's summary JSON reports about itself, flattened.

    Every top-level number named ``...Seconds``, ``concurrency``, and the numbers of any object
    whose key names phases (``phases``, ``phaseSeconds``, ...), prefixed with that key. Whatever
    names the package settles on, the benchmark prints them beside what the server saw.
    """
    times: dict[str, float] = {}
    for key, value in summary.items():
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if is_number and (key.endswith("Seconds") or key == "concurrency"):
            times[key] = float(value)
        elif isinstance(value, dict) and "phase" in key.lower():
            for name, inner in value.items():
                if isinstance(inner, int | float) and not isinstance(inner, bool):
                    times[f"{key}.{name}"] = float(inner)
    return times


def fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def print_runs(runs: list[RunFigures]) -> None:
    head = f"{'tool':<10} {'mode':<8} {'pair':>4} " + " ".join(f"{label:>11}" for _, label, _ in METRICS)
    head += f" {'saves':>6} {'inflight':>8} {'srv %':>5} {'load':>5} exit"
    print(head)
    for r in runs:
        cells = " ".join(f"{fmt(getattr(r, key), pattern):>11}" for key, _, pattern in METRICS)
        busy = 100 * r.server_cpu_s / r.wall_s if r.wall_s else 0.0
        print(
            f"{r.tool:<10} {r.mode:<8} {r.pair:>4} {cells} {r.saves_ok:>6} {r.peak_in_flight:>8} "
            f"{busy:>5.0f} {r.load:>5.2f} {r.exit_code:>4}"
        )


def print_own_times(runs: list[RunFigures]) -> None:
    for r in runs:
        if r.own_times:
            told = ", ".join(f"{name} {value:.2f}" for name, value in r.own_times.items())
            print(f"  {r.tool} pair {r.pair}, its own summary: {told}")


def medians(runs: list[RunFigures], tools: tuple[str, str] = TOOLS) -> dict[str, dict[str, float | None]]:
    """Tool -> metric -> median over the runs given (one size, latency and mode)."""
    return {
        tool: {key: median([getattr(r, key) for r in runs if r.tool == tool]) for key, _, _ in METRICS}
        for tool in tools
    }


def ratios(med: dict[str, dict[str, float | None]]) -> dict[str, float | None]:
    """Metric -> polyv-sync's median / dlt's."""
    out: dict[str, float | None] = {}
    for key, _, _ in METRICS:
        ours, theirs = med["polyv-sync"][key], med[BASELINE if BASELINE in med else "dlt"][key]
        out[key] = ours / theirs if ours is not None and theirs else None
    return out


def print_medians(med: dict[str, dict[str, float | None]], ratio: dict[str, float | None]) -> None:
    print(f"{'median':<24} " + " ".join(f"{label:>11}" for _, label, _ in METRICS))
    for tool in med:
        print(f"{tool:<24} " + " ".join(f"{fmt(med[tool][key], pattern):>11}" for key, _, pattern in METRICS))
    other = next(t for t in med if t != "polyv-sync")
    cells = " ".join(f"{fmt(ratio[key], '{:.2f}'):>11}" for key, _, _ in METRICS)
    print(f"{'ratio polyv-sync/' + other:<24} {cells}")


# ----------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="200000,1000000", help="input sizes, comma-separated")
    parser.add_argument("--latency-ms", default="50,20", help="simulator latencies, comma-separated")
    parser.add_argument("--pairs", type=int, default=3, help="A B pairs per case")
    parser.add_argument("--modes", default=",".join(MODES), help="matched, defaults or both")
    parser.add_argument("--rps", type=float, default=100.0, help="both tools' cap, requests/s")
    parser.add_argument("--dlt-default-workers", type=int, default=9, help="dlt's load workers in 'defaults'")
    parser.add_argument("--json", help="also write every run's figures here")
    parser.add_argument(
        "--baseline-tree",
        help="instead of dlt, run polyv-sync from this source tree (PYTHONPATH) as the baseline: before/after",
    )
    args = parser.parse_args(argv)
    args.items = [int(v) for v in args.items.split(",")]
    args.latency_ms = [float(v) for v in args.latency_ms.split(",")]
    args.modes = [m.strip() for m in args.modes.split(",")]
    if not set(args.modes) <= set(MODES):
        parser.error(f"--modes: {', '.join(MODES)}")
    if args.pairs < 1 or min(args.items) < 1:
        parser.error("--pairs and --items must be >= 1")
    return args


def byte_compile(tree: Path) -> None:
    """Compile ``tree``'s package to bytecode, as a pip install does for its users. An editable
    checkout run with PYTHONDONTWRITEBYTECODE set (as on these machines) compiled every module
    from source at each start: about 0.1 s of every start (docs/benchmarks.md)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "polyv_connector")], check=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tools = ("polyv-sync", BASELINE) if args.baseline_tree else TOOLS
    if not args.baseline_tree:
        ensure_dlt_venv()
    for tree in (REPO, *([Path(args.baseline_tree)] if args.baseline_tree else [])):
        byte_compile(tree)
    print(
        f"peer: polyv-sync vs dlt 1.31, items {args.items}, latency {args.latency_ms} ms, {args.pairs} pair(s), "
        f"modes {args.modes}, {args.rps:g} req/s each; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
        flush=True,
    )
    cases: list[dict[str, Any]] = []
    limit = RateLimitConfig(max_requests=1500, window_s=10.0, block_s=300.0)
    sim = RecordingSimulator(apps={APP_ID: APP_SECRET}, fields=FIELDS, rate_limit=limit, record_batches=False)
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp_name, sim:
        tmp = Path(tmp_name)
        for items in args.items:
            input_path = tmp / f"input-{items}.parquet"
            write_input(input_path, items)
            for latency_ms in args.latency_ms:
                sim.set_faults(FaultConfig(latency_s=latency_ms / 1000))
                for mode in args.modes:
                    print(f"\n== {items:,} items, {latency_ms:g} ms, {mode}", flush=True)
                    runs = [
                        run_one(sim, tool, mode, items, latency_ms, pair, args, input_path, tmp)
                        for pair in range(1, args.pairs + 1)
                        for tool in tools  # A B A B: each pair runs both, one after the other
                    ]
                    print_runs(runs)
                    print_own_times(runs)
                    med = medians(runs, tools)
                    ratio = ratios(med)
                    print_medians(med, ratio)
                    cases.append(
                        {
                            "items": items,
                            "latency_ms": latency_ms,
                            "mode": mode,
                            "runs": [asdict(r) for r in runs],
                            "medians": med,
                            "ratios": ratio,
                        }
                    )
    print(f"\nload average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (a shared machine: noisy)")
    if args.json:
        Path(args.json).write_text(json.dumps(cases, indent=2) + "\n")


if __name__ == "__main__":
    main()
