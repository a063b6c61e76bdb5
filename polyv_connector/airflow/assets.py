"""Asset identities of sync reports, so downstream DAGs can schedule on them.

A downstream DAG uses the same helper as the operator, e.g.
``schedule=[report_table_asset("polyv_warehouse", "polyv_sync_report")]``. Each asset event
carries the run's summary (runId, counts, report location) in its ``extra``.
"""

from __future__ import annotations

import posixpath

from airflow.sdk import Asset

# "x-" schemes are the documented way to use a URI scheme Airflow has no handler for.
TABLE_SCHEME = "x-polyv-report-table"
FILE_SCHEME = "x-polyv-report-file"
TASK_SCHEME = "x-polyv-report"


def report_table_asset(conn_id: str, table: str) -> Asset:
    """The report table ``table`` reached through Airflow connection ``conn_id``."""
    return Asset(name=f"polyv_report_table/{conn_id}/{table}", uri=f"{TABLE_SCHEME}://{conn_id}/{table}")


def report_file_asset(path: str) -> Asset:
    """A Parquet report file: ``file://`` for absolute paths, the URL itself for URLs.

    A relative path only means something on the worker that resolves it, so it gets a
    scheme of its own rather than a ``file://`` URI that would point elsewhere.
    """
    if "://" in path:
        return Asset(name=f"polyv_report_file/{path}", uri=path)
    if posixpath.isabs(path):
        return Asset(name=f"polyv_report_file/{path}", uri=f"file://{posixpath.normpath(path)}")
    return Asset(name=f"polyv_report_file/{path}", uri=f"{FILE_SCHEME}:///{path}")


def sync_report_asset(dag_id: str, task_id: str) -> Asset:
    """The report of one sync task, wherever it is written (each event's extra says where)."""
    return Asset(name=f"polyv_report/{dag_id}/{task_id}", uri=f"{TASK_SCHEME}://{dag_id}/{task_id}")
