"""Benchmark: the bundled expectation suite on 1M items, ours (chunked) vs naive GX COMPLETE mode.

Measured in the same run, each in a fresh process (so import costs and peak memory are its own):

* ``ours``  — ``SuiteValidator``: per 65,536-item chunk, one GX metric graph at SUMMARY level
  whose boolean condition series give the failing rows; GX judges the folded metrics at finish.
* ``naive`` — the textbook GX 1.x way to find failing rows: an ephemeral context, a pandas
  data source over the whole table, ``ValidationDefinition.run(result_format=COMPLETE,
  unexpected_index_column_names=["rowNumber"])``, then reasons from ``unexpected_index_list``.
* ``run+gx`` vs ``run`` — a whole ``sync()`` dry run (read Parquet, checks, plan, report) with
  and without the suite: what the suite adds to a run, GX import included.

Both ways must agree on the number of rejected items (checked). Run:

    .venv/bin/python bench/bench_expectations.py [--rows 1000000] [--fail-fraction 0.01,0.2]

Figures vary with machine load; the ratio is the stable part.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "expectations" / "viewer_custom_fields.json"
CHUNK = 65_536


def make_input(path: Path, rows: int, fail_fraction: float) -> None:
    """Long-form items, four fields per viewer, with planted failures of the bundled suite."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    fields = np.array(["PAY_STATUS", "VIP_LEVEL", "COURSE_PROGRESS", "MEMBER_TIER"], dtype=object)
    viewer = np.array([f"viewer-{i // 4:08d}" for i in range(rows)], dtype=object)
    field = fields[np.arange(rows) % 4]
    value = np.array([f"值-{i % 977}" for i in range(rows)], dtype=object)
    # Spread the failures over three expectations (blank viewerId, null value, long field id).
    kind = rng.integers(0, 3, rows)
    bad = rng.random(rows) < fail_fraction
    viewer[bad & (kind == 0)] = "   "
    value[bad & (kind == 1)] = None
    field[bad & (kind == 2)] = "F" * 80
    pq.write_table(
        pa.table(
            {
                "viewerId": pa.array(viewer, pa.string()),
                "customFieldId": pa.array(field, pa.string()),
                "customFieldValue": pa.array(value, pa.string()),
            }
        ),
        path,
        row_group_size=128_000,
    )


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _item_chunks(path: Path) -> list:
    """The input as the engine hands it to a validator: item tables of CHUNK rows."""
    import pyarrow.parquet as pq

    from polyv_connector.config import ColumnMapping
    from polyv_connector.items.convert import to_items

    chunks, first = [], 0
    for batch in pq.ParquetFile(path).iter_batches(CHUNK):
        chunks.append(to_items(batch, ColumnMapping(), first))
        first += batch.num_rows
    return chunks


def child_ours(path: Path, out: Path) -> dict:
    chunks = _item_chunks(path)
    base_rss = _peak_rss_mb()
    t0 = time.perf_counter()
    from polyv_connector.expectations import SuiteValidator

    validator = SuiteValidator.from_file(str(SUITE), report_dir=str(out / "report.parquet"))
    t1 = time.perf_counter()
    rejected = 0
    for items in chunks:
        reasons = validator.validate_chunk(items)
        if reasons is not None:
            rejected += len(reasons) - reasons.null_count
    t2 = time.perf_counter()
    gates = validator.finish()
    t3 = time.perf_counter()
    json.dumps(validator.summary(), allow_nan=False)
    return {
        "load_s": t1 - t0,
        "validate_s": t2 - t1,
        "finish_s": t3 - t2,
        "rejected": rejected,
        "gates": gates,
        "peak_rss_mb": _peak_rss_mb(),
        "input_rss_mb": base_rss,
    }


def child_naive(path: Path, out: Path) -> dict:
    import json as _json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    table = table.add_column(0, "rowNumber", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    df = table.to_pandas()
    base_rss = _peak_rss_mb()
    t0 = time.perf_counter()
    import great_expectations as gx

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = {"globally": False}
    batch_def = (
        ctx.data_sources.add_pandas("items").add_dataframe_asset("items").add_batch_definition_whole_dataframe("all")
    )
    suite = ctx.suites.add(gx.ExpectationSuite(**_json.loads(SUITE.read_text(encoding="utf-8"))))
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name="naive", data=batch_def, suite=suite))
    t1 = time.perf_counter()
    res = vd.run(
        batch_parameters={"dataframe": df},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["rowNumber"]},
    )
    t2 = time.perf_counter()
    reasons: dict[int, list[str]] = {}
    for evr in res.results:
        cfg = evr.expectation_config
        label = f"{cfg.type}({cfg.kwargs.get('column')})"
        for hit in (evr.result or {}).get("unexpected_index_list") or []:
            reasons.setdefault(int(hit["rowNumber"]), []).append(label)
    t3 = time.perf_counter()
    (out / "naive.validation.json").write_text(_json.dumps(res.describe_dict(), allow_nan=False))
    return {
        "load_s": t1 - t0,
        "validate_s": t2 - t1,
        "finish_s": time.perf_counter() - t2,
        "reasons_s": t3 - t2,
        "rejected": len(reasons),
        "peak_rss_mb": _peak_rss_mb(),
        "input_rss_mb": base_rss,
    }


def child_run(path: Path, out: Path, with_gx: bool) -> dict:
    """One sync() dry run over the Parquet file; with_gx adds the bundled suite (import included)."""
    from polyv_connector import Credentials, Secret, SyncOptions
    from polyv_connector.progress import Progress
    from polyv_connector.report import ParquetReport
    from polyv_connector.run import sync
    from polyv_connector.sources.parquet import ParquetSource

    t0 = time.perf_counter()
    validator = None
    if with_gx:
        from polyv_connector.expectations import SuiteValidator

        validator = SuiteValidator.from_file(str(SUITE), report_dir=str(out / "run.parquet"))
    # Dry run without the preflight field list: no request is made, so no server is needed.
    result = sync(
        ParquetSource(str(path)),
        Credentials("bench", Secret("bench-secret"), "http://127.0.0.1:9"),
        SyncOptions(dry_run=True, check_fields=False),
        ParquetReport(str(out / "run.parquet")),
        validator=validator,
        progress=Progress(interval_s=1e9),
    )
    return {
        "run_s": time.perf_counter() - t0,
        "rejected": result.counts.get("rejected", 0),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _spawn(mode: str, path: Path, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--input", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**os.environ, "GX_ANALYTICS_ENABLED": "false"},
    )
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument(
        "--fail-fraction", default="0.01,0.2", help="comma-separated fractions of failing items, one measurement each"
    )
    ap.add_argument("--skip-naive", action="store_true", help="skip the slow COMPLETE-mode baseline")
    ap.add_argument("--child", choices=["ours", "naive", "run", "run+gx"], help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        path, out = Path(args.input), Path(args.out)
        fn = {
            "ours": lambda: child_ours(path, out),
            "naive": lambda: child_naive(path, out),
            "run": lambda: child_run(path, out, False),
            "run+gx": lambda: child_run(path, out, True),
        }
        print(json.dumps(fn[args.child]()))
        return

    fractions = [float(f) for f in args.fail_fraction.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        n_exp = len(json.loads(SUITE.read_text(encoding="utf-8"))["expectations"])
        print(
            f"bundled suite ({n_exp} expectations) on {args.rows:,} items in chunks of {CHUNK:,}; {os.cpu_count()} CPUs"
        )
        for i, fraction in enumerate(fractions):
            path = out / f"items-{i}.parquet"
            make_input(path, args.rows, fraction)
            print(f"-- {fraction:.0%} of the items fail the suite")
            ours = _spawn("ours", path, out)
            print(
                f"ours  : GX import + suite load {ours['load_s']:5.2f}s | validate {ours['validate_s']:6.2f}s | "
                f"finish (judge, JSON, Data Docs) {ours['finish_s']:5.2f}s | rejected {ours['rejected']:,} | "
                f"peak RSS {ours['peak_rss_mb']:,.0f} MB ({ours['input_rss_mb']:,.0f} MB holding the input)"
            )
            if not args.skip_naive:
                naive = _spawn("naive", path, out)
                print(
                    f"naive : GX import + context   {naive['load_s']:5.2f}s | validate {naive['validate_s']:6.2f}s | "
                    f"rows from index lists {naive['reasons_s']:5.2f}s | rejected {naive['rejected']:,} | "
                    f"peak RSS {naive['peak_rss_mb']:,.0f} MB ({naive['input_rss_mb']:,.0f} MB holding the input)"
                )
                assert naive["rejected"] == ours["rejected"], "the two ways disagree on the rejected items"
                ours_work = ours["validate_s"] + ours["finish_s"]
                naive_work = naive["validate_s"] + naive["reasons_s"]
                print(
                    f"ratio : naive COMPLETE / ours = {naive_work / ours_work:.1f}x for validation "
                    f"({naive_work:.2f}s vs {ours_work:.2f}s, imports excluded), "
                    f"{(naive['load_s'] + naive_work) / (ours['load_s'] + ours_work):.1f}x with imports"
                )
            plain, with_gx = _spawn("run", path, out), _spawn("run+gx", path, out)
            assert with_gx["rejected"] >= ours["rejected"]
            added = with_gx["run_s"] - plain["run_s"]
            print(
                f"run   : sync() dry run {plain['run_s']:5.2f}s without the suite, {with_gx['run_s']:5.2f}s "
                f"with it: +{added:.2f}s (target <= 3 s, GX import included); peak RSS "
                f"{plain['peak_rss_mb']:,.0f} -> {with_gx['peak_rss_mb']:,.0f} MB"
            )


if __name__ == "__main__":
    main()
