"""Benchmark: the warehouse layer on PostgreSQL, MariaDB and DuckDB (issue #13).

Per engine, with ``--rows`` rows (default 1M) in a throwaway schema / database / file:

* read: the source table read through :class:`SqlSource` (streamed: named cursor, unbuffered
  cursor, Arrow batches), its rate and the peak growth of the process's RSS during the read;
  baseline: the same rows through the driver's default cursor and ``fetchmany``;
* report write: that many report rows appended with :class:`SqlReportTable` (COPY, multi-row
  INSERT, Arrow); baseline: the generic ``executemany`` path on a sample;
* state write: that many confirmations recorded in :class:`SqlStateTable`;
* rerun: a whole sync with nothing changed (the source read, planned against the state, the
  report of ``unchanged`` rows written), no request sent; and the same with the diff in the
  warehouse, where no row leaves the database.

Goals (issue #13): reads streamed (RSS growth < 150 MB per 1M rows), writes >= 50k rows/s,
a rerun of 1M unchanged rows under 30 s, on each engine. Each engine runs in its own process,
so one's memory does not hide another's. Run:

    .venv/bin/python bench/bench_warehouses.py [--rows 1000000] [--engines postgresql,mariadb,duckdb]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

APP = "bench-app"
PG_DSN = os.environ.get("POLYV_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=test")
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "passwd": "", "charset": "utf8mb4"}
ENGINES = ("postgresql", "mariadb", "duckdb")
GOAL_RSS_MB_PER_M, GOAL_WRITE_RPS, GOAL_RERUN_S_PER_M = 150.0, 50_000.0, 30.0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_rss_growth() -> Iterator[dict[str, float]]:
    """The peak growth of this process's RSS over the block (sampled every 5 ms), in MB."""
    out = {"mb": 0.0}
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield out
    finally:
        done.set()
        sampler.join()
        out["mb"] = (max(peak[0], _rss_bytes()) - base) / 1e6


# ---- one engine: setup and teardown ---------------------------------------------------------------
class Place:
    """A throwaway place in one engine: how to connect, how to name a table, how to load rows."""

    def __init__(self, engine: str, workdir: str) -> None:
        self.engine = engine
        self.name = f"polyv_bench_{uuid.uuid4().hex[:8]}"
        if engine == "postgresql":
            import psycopg

            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {self.name}")
            self.connect: Callable[[], Any] = lambda: psycopg.connect(PG_DSN)
            self.prefix, self.dialect = f"{self.name}.", "postgresql"
        elif engine == "mariadb":
            import MySQLdb

            conn = MySQLdb.connect(**MYSQL)
            conn.cursor().execute(f"CREATE DATABASE {self.name} CHARACTER SET utf8mb4")
            conn.close()
            self.connect = lambda: MySQLdb.connect(db=self.name, **MYSQL)
            self.prefix, self.dialect = f"{self.name}.", "mysql"
        else:
            import duckdb

            path = os.path.join(workdir, f"{self.name}.duckdb")
            self.connect = lambda: duckdb.connect(path)
            self.prefix, self.dialect = "", "duckdb"

    def table(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def execute(self, sql: str) -> None:
        conn = self.connect()
        try:
            conn.cursor().execute(sql)
            conn.commit()
        finally:
            conn.close()

    def load_source(self, rows: int) -> str:
        table = self.table("attrs")
        self.execute(f"CREATE TABLE {table} (viewer_id VARCHAR(64), field_id VARCHAR(64), value VARCHAR(64))")
        if self.engine == "postgresql":
            series = f"generate_series(1, {rows}) AS g(i)"
            text = "'viewer-' || i, 'VIP_LEVEL', 'L' || (i % 1000)"
        elif self.engine == "mariadb":
            # MariaDB's sequence engine: seq_1_to_N is a table of 1..N.
            series = f"seq_1_to_{rows} AS g"
            text = "CONCAT('viewer-', seq), 'VIP_LEVEL', CONCAT('L', seq % 1000)"
        else:
            series = f"range(1, {rows + 1}) AS g(i)"
            text = "'viewer-' || i, 'VIP_LEVEL', 'L' || (i % 1000)"
        self.execute(f"INSERT INTO {table} SELECT {text} FROM {series}")
        return table

    def drop(self) -> None:
        if self.engine == "postgresql":
            import psycopg

            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")
        elif self.engine == "mariadb":
            self.execute(f"DROP DATABASE IF EXISTS {self.name}")


def report_rows(n: int, start: int = 0) -> Any:
    """``n`` report rows (the current report schema), built column-wise."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.compute as pc

    from polyv_connector.model import report_schema

    schema = report_schema()
    idx = pa.array(range(start, start + n), pa.int64())
    text = pc.cast(idx, pa.string())
    columns: dict[str, Any] = {
        "rowNumber": idx,
        "viewerId": pc.binary_join_element_wise("viewer-", text, ""),
        "customFieldId": pa.array(["VIP_LEVEL"] * n),
        "customFieldValue": pc.binary_join_element_wise("L", text, ""),
        "status": pa.array(["unchanged"] * n),
        "attempts": pa.array([0] * n, pa.int64()),
        "runId": pa.array(["bench-run"] * n),
        "syncedAt": pa.array([dt.datetime(2025, 5, 6, 7, 8, 9, tzinfo=dt.UTC)] * n, pa.timestamp("us", tz="UTC")),
        "appId": pa.array([APP] * n),
    }
    arrays = [columns.get(f.name, pa.nulls(n, f.type)).cast(f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def adbc_read(table: str, columns: list[str], batch_rows: int, rows: int) -> dict[str, float]:
    """The same table through ADBC (adbc-driver-postgresql), if installed: Arrow record batches
    streamed in a read-only transaction, each column made what the connector would send. Not the
    connector's path (issue 13: its results differ from psycopg's, see the README); measured to
    show what it would gain."""
    try:
        import adbc_driver_postgresql.dbapi as adbc
    except ImportError:
        return {}
    import pyarrow as pa

    from polyv_connector.sources.sql import arrow_column_to_source

    with peak_rss_growth() as rss:
        conn = adbc.connect(PG_DSN)
        try:
            cur = conn.cursor()
            cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(batch_rows * 64)})
            t = time.perf_counter()
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(f"SELECT {', '.join(columns)} FROM {table}")
            n = 0
            for b in cur.fetch_record_batch():
                n += pa.RecordBatch.from_arrays([arrow_column_to_source(c) for c in b.columns], names=columns).num_rows
            elapsed = time.perf_counter() - t
            conn.rollback()
        finally:
            conn.close()
    assert n == rows, (n, rows)
    return {"adbc_read_s": elapsed, "adbc_read_rss_mb": rss["mb"]}


def run_engine(engine: str, rows: int, batch_rows: int, sample_rows: int) -> dict[str, float]:
    import pyarrow as pa

    from polyv_connector.config import ColumnMapping, Credentials, Secret, SyncOptions
    from polyv_connector.fingerprints import key_hashes, value_fingerprints
    from polyv_connector.model import REPORT_COLUMNS
    from polyv_connector.progress import Progress
    from polyv_connector.run import sync
    from polyv_connector.sources.sql import SqlSource
    from polyv_connector.state.table import SqlStateTable
    from polyv_connector.warehouse import dbapi
    from polyv_connector.warehouse.report_table import SqlReportTable

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as workdir:
        place = Place(engine, workdir)
        try:
            t = time.perf_counter()
            source_table = place.load_source(rows)
            out["setup_s"] = time.perf_counter() - t
            mapping = ColumnMapping("viewer_id", "field_id", "value")
            columns = list(mapping.source_columns)

            # -- read, streamed (the library), then the driver's default cursor (baseline)
            source = SqlSource(place.connect, table=source_table, dialect=place.dialect)
            source.columns()
            with peak_rss_growth() as rss:
                t = time.perf_counter()
                n = sum(b.num_rows for b in source.batches(columns, batch_rows))
                out["read_s"] = time.perf_counter() - t
            assert n == rows, (n, rows)
            out["read_rps"], out["read_rss_mb"] = rows / out["read_s"], rss["mb"]
            with peak_rss_growth() as rss:
                conn = place.connect()
                try:
                    cur = conn.cursor()
                    t = time.perf_counter()
                    cur.execute(f"SELECT viewer_id, field_id, value FROM {source_table}")
                    n = 0
                    while chunk := cur.fetchmany(batch_rows):
                        n += len(chunk)
                    out["base_read_s"] = time.perf_counter() - t
                finally:
                    conn.close()
            out["base_read_rss_mb"] = rss["mb"]
            if engine == "postgresql":
                out.update(adbc_read(source_table, columns, batch_rows, rows))

            # -- report write: the bulk path, then the generic executemany on a sample (baseline)
            report = SqlReportTable(place.connect, place.table("polyv_sync_report"), dialect=place.dialect)
            data = report_rows(rows)
            t = time.perf_counter()
            for batch in data.to_batches(batch_rows):
                report.write(batch)
            report.close()
            out["report_rps"] = rows / (time.perf_counter() - t)
            sample = data.slice(0, sample_rows)
            conn = place.connect()
            try:
                fmt = "`{}`" if place.dialect == "mysql" else '"{}"'
                cols = ", ".join(fmt.format(c) for c in REPORT_COLUMNS)
                ph = "?" if place.dialect == "duckdb" else "%s"
                t = time.perf_counter()
                with dbapi.cursor(conn) as cur:
                    dbapi.insert_rows(cur, place.table("polyv_sync_report"), cols, ph, dbapi._naive_utc(sample))
                conn.commit()
                out["base_report_rps"] = sample_rows / (time.perf_counter() - t)
            finally:
                conn.close()
            out["report_path"] = report.write_path or ""  # type: ignore[assignment]

            # -- state write: every row confirmed, in send-sized batches
            state = SqlStateTable(place.connect, place.table("polyv_sync_state"), APP)
            family = state.hash_family
            state.begin("bench-seed")
            elapsed = 0.0
            for batch in source.batches(columns, batch_rows):
                key, _ = key_hashes(batch.column(0), batch.column(1), family)
                fp = value_fingerprints(batch.column(2), family)
                t = time.perf_counter()
                state.record(key, fp, items=pa.table(batch))
                elapsed += time.perf_counter() - t
            state.finish()
            out["state_rps"] = rows / elapsed

            # -- rerun with nothing changed: read, plan, report; no request (the URL is dead)
            creds = Credentials(APP, Secret("bench-secret"), "http://127.0.0.1:9")
            options = SyncOptions(check_fields=False, mapping=mapping, read_batch_rows=batch_rows)
            for mode in ("python", "warehouse"):
                in_wh = mode == "warehouse"
                st = SqlStateTable(place.connect, place.table("polyv_sync_state"), APP, load_for_local_diff=not in_wh)
                src = SqlSource(
                    place.connect, table=source_table, dialect=place.dialect, skip_unchanged=st if in_wh else None
                )
                rep = SqlReportTable(place.connect, place.table("polyv_sync_report"), dialect=place.dialect)
                t = time.perf_counter()
                res = sync(src, creds, options, rep, state=st, progress=Progress(interval_s=1e9))
                out[f"rerun_{mode}_s"] = time.perf_counter() - t
                assert res.requests_sent == 0, res.counts
                assert res.counts.get("unchanged", 0) == (0 if in_wh else rows), res.counts
        finally:
            place.drop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--batch-rows", type=int, default=65_536)
    ap.add_argument("--sample-rows", type=int, default=20_000, help="rows of the executemany baseline")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sample = min(args.sample_rows, args.rows)
    if args.child:
        print(json.dumps(run_engine(args.child, args.rows, args.batch_rows, sample)))
        return
    print(f"{args.rows:,} rows per engine, read in batches of {args.batch_rows:,}; each engine in its own process")
    failed = []
    for engine in args.engines.split(","):
        cmd = [sys.executable, __file__, "--child", engine, "--rows", str(args.rows)]
        cmd += ["--batch-rows", str(args.batch_rows), "--sample-rows", str(sample)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{engine}: FAILED\n{proc.stderr[-3000:]}")
            failed.append(engine)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        per_m = 1e6 / args.rows
        print(f"\n== {engine} (setup {r['setup_s']:.1f}s)")
        print(
            f"read        : {r['read_rps']:>10,.0f} rows/s, peak RSS growth {r['read_rss_mb']:6.1f} MB "
            f"({r['read_rss_mb'] * per_m:.0f} MB per 1M rows; goal < {GOAL_RSS_MB_PER_M:.0f})"
        )
        memory_ratio = r["base_read_rss_mb"] / max(r["read_rss_mb"], 0.1)
        print(
            f"read  base  : driver's default cursor {args.rows / r['base_read_s']:>10,.0f} rows/s, peak RSS growth "
            f"{r['base_read_rss_mb']:6.1f} MB; ratio {memory_ratio:.1f}x the memory"
        )
        if "adbc_read_s" in r:
            adbc_rps = args.rows / r["adbc_read_s"]
            print(
                f"read  adbc  : {adbc_rps:>10,.0f} rows/s, peak RSS growth {r['adbc_read_rss_mb']:6.1f} MB; "
                f"ratio {adbc_rps / r['read_rps']:.2f}x the psycopg read (not the connector's path)"
            )
        write_ratio = r["report_rps"] / r["base_report_rps"]
        print(
            f"report write: {r['report_rps']:>10,.0f} rows/s ({r['report_path']}; goal >= {GOAL_WRITE_RPS:,.0f}); "
            f"executemany baseline {r['base_report_rps']:,.0f} rows/s, ratio {write_ratio:.1f}x"
        )
        print(f"state write : {r['state_rps']:>10,.0f} rows/s (goal >= {GOAL_WRITE_RPS:,.0f})")
        print(
            f"rerun       : nothing changed, {r['rerun_python_s']:.1f}s with the diff in the connector, "
            f"{r['rerun_warehouse_s']:.1f}s in the warehouse ({r['rerun_python_s'] * per_m:.1f}s per 1M rows; "
            f"goal < {GOAL_RERUN_S_PER_M:.0f})"
        )
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
