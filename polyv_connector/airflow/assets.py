"""Where a sync reads and writes, named once for Airflow assets and OpenLineage alike.

Each location is a :class:`Location`: an OpenLineage dataset identity (``namespace`` +
``name``, following OpenLineage's dataset naming conventions) and the Airflow asset URI of the
same place, so the asset graph in Airflow and the lineage graph of an OpenLineage consumer
show the same nodes. The naming functions are pure: the operator reads the connection, these
only format.

Report assets by identity (for downstream ``schedule=[...]``): a downstream DAG uses the same
helper as the operator, e.g. ``schedule=[report_table_asset("polyv_warehouse",
"polyv_sync_report")]``. Each asset event carries the run's summary (runId, counts, report
location) in its ``extra``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow.sdk import Asset, AssetAlias

# "x-" schemes are the documented way to use a URI scheme Airflow has no handler for.
TABLE_SCHEME = "x-polyv-report-table"
FILE_SCHEME = "x-polyv-report-file"
TASK_SCHEME = "x-polyv-report"

# Object stores: the bucket (or container) is the namespace, the key (no leading slash) the name.
OBJECT_STORES = frozenset({"s3", "gs", "abfs", "abfss", "wasb", "wasbs", "az", "adl", "r2", "oss", "cos"})
AZURE = frozenset({"abfs", "abfss", "wasb", "wasbs", "az", "adl"})
# Spellings of one scheme that name the same store (Hadoop's s3a/s3n are S3, fsspec's gcs is GCS).
SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3", "gcs": "gs", "postgresql": "postgres", "mariadb": "mysql"}
DEFAULT_PORTS = {"http": 80, "https": 443, "postgres": 5432, "mysql": 3306}
# The POLYV endpoint the sync writes to, per appId (the "dataset" is the account's viewer values).
POLYV_DATASET = "live/v4/user/custom-field/viewer-value"


@dataclass(frozen=True)
class Location:
    """A dataset's identity: OpenLineage ``namespace`` and ``name``, and its Airflow asset ``uri``."""

    namespace: str
    name: str
    uri: str

    def asset(self, **extra: Any) -> Asset:
        """The Airflow asset of this location (its name is its URI: one identity per place)."""
        return Asset(name=self.uri, uri=self.uri, extra=extra or None)


def _authority(scheme: str, host: str | None, port: int | None, *, keep_default_port: bool) -> str:
    """``host[:port]``, lower-case, without credentials; the scheme's default port dropped unless
    the naming convention keeps it (databases name ``host:port`` always)."""
    host = (host or "").lower()
    if ":" in host and not host.startswith("["):  # an IPv6 literal
        host = f"[{host}]"
    default = DEFAULT_PORTS.get(scheme)
    if port is None and keep_default_port and default is not None:
        port = default
    if port is None or (port == default and not keep_default_port):
        return host
    return f"{host}:{port}"


def file_location(path: str) -> Location:
    """A file, directory or object-store URL, named as OpenLineage names files.

    Local paths become absolute (namespace ``file``); object stores give ``scheme://bucket``
    and the key (``s3a://b/k`` is ``s3://b`` + ``k``); other URLs keep their port
    (``hdfs://nn:8020`` + ``/path``). Credentials and query strings never reach a name.
    """
    if "://" not in path or path.startswith("file:"):
        local = path[len("file://") :] if path.startswith("file://") else path
        if path.startswith("file:") and not path.startswith("file://"):
            local = "/" + path[len("file:") :].lstrip("/")
        # file://host/path names a file on another host: keep the host in the namespace.
        host = ""
        if path.startswith("file://") and not local.startswith("/"):
            host, _, rest = local.partition("/")
            local = "/" + rest
        absolute = posixpath.normpath(posixpath.abspath(unquote(local)))
        if host and host.lower() != "localhost":
            return Location(f"file://{host.lower()}", absolute, f"file://{host.lower()}{absolute}")
        return Location("file", absolute, f"file://{absolute}")
    parts = urlsplit(path)
    scheme = SCHEME_ALIASES.get(parts.scheme.lower(), parts.scheme.lower())
    if scheme in OBJECT_STORES:
        # Azure's authority is container@account (no credentials); elsewhere drop any user info.
        bucket = parts.netloc if scheme in AZURE else parts.netloc.rpartition("@")[2]
        key = posixpath.normpath(parts.path).lstrip("/") if parts.path.strip("/") else "/"
        return Location(f"{scheme}://{bucket}", key, f"{scheme}://{bucket}/{key.lstrip('/')}")
    authority = _authority(scheme, parts.hostname, parts.port, keep_default_port=False)
    name = posixpath.normpath(parts.path) if parts.path else "/"
    return Location(f"{scheme}://{authority}", name, f"{scheme}://{authority}{name}")


def _identifier_parts(table: str) -> list[str]:
    """``schema.table`` as its parts, quotes removed (``"My Schema".t`` -> ``My Schema``, ``t``)."""
    parts = re.findall(r'"((?:[^"]|"")*)"|`((?:[^`]|``)*)`|\[([^\]]*)\]|([^.]+)', table.strip())
    return [next(p for p in groups if p).strip() for groups in parts if any(groups)]


def table_location(
    conn_type: str,
    table: str,
    *,
    host: str | None = None,
    port: int | None = None,
    database: str | None = None,
    default_schema: str | None = None,
) -> Location:
    """A warehouse table reached through a connection, named as OpenLineage names tables.

    PostgreSQL: ``postgres://host:port`` + ``database.schema.table`` (schema ``public`` unless
    given); MySQL/MariaDB: ``mysql://host:port`` + ``database.table``; DuckDB and SQLite (the
    host is the database file): ``duckdb:///abs/file.duckdb`` + ``catalog.schema.table``. The
    asset URI is the same place in Airflow's form (``postgres://host:port/db/schema/table``,
    what Airflow's PostgreSQL provider turns back into the same OpenLineage name).
    """
    kind = SCHEME_ALIASES.get(conn_type.lower(), conn_type.lower())
    parts = _identifier_parts(table) or [table]
    if kind in {"duckdb", "sqlite"}:
        raw = host or database or ":memory:"
        path = raw if raw.startswith(":memory:") else posixpath.normpath(posixpath.abspath(raw))
        catalog = posixpath.splitext(posixpath.basename(path))[0] if kind == "duckdb" else "main"
        if kind == "duckdb":
            # DuckDB's catalog is the file's stem; its default schema is "main".
            full = (
                parts[-3:]
                if len(parts) >= 3
                else [catalog, *parts]
                if len(parts) == 2
                else [catalog, default_schema or "main", parts[0]]
            )
        else:
            full = parts[-2:] if len(parts) > 1 else ["main", parts[0]]
        namespace = f"{kind}://{path}"
        return Location(namespace, ".".join(full), f"{namespace}/{'/'.join(full)}")
    keep_port = kind in DEFAULT_PORTS or port is not None
    authority = _authority(kind, host or "localhost", port, keep_default_port=keep_port)
    namespace = f"{kind}://{authority}"
    if kind == "mysql":
        # MySQL has no schemas: a database and a table (``db.table`` names another database).
        full = parts[-2:] if len(parts) > 1 else [database or "default", parts[0]]
    else:
        if len(parts) >= 3:
            full = parts[-3:]
        elif len(parts) == 2:
            full = [database or "default", *parts]
        else:
            full = [database or "default", default_schema or ("public" if kind == "postgres" else "default"), parts[0]]
    return Location(namespace, ".".join(full), f"{namespace}/{'/'.join(full)}")


def polyv_location(base_url: str, app_id: str) -> Location:
    """The viewer values of ``app_id`` at POLYV: the API's origin (lower-case host, no default
    port) as namespace, the save endpoint's dataset path and the appId as name."""
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower() or "https"
    namespace = f"{scheme}://{_authority(scheme, parts.hostname, parts.port, keep_default_port=False)}"
    prefix = parts.path.strip("/")
    name = "/".join(p for p in (prefix, POLYV_DATASET, app_id) if p)
    return Location(namespace, name, f"{namespace}/{name}")


def report_table_asset(conn_id: str, table: str) -> Asset:
    """The report table ``table`` reached through Airflow connection ``conn_id``."""
    return Asset(name=f"polyv_report_table/{conn_id}/{table}", uri=f"{TABLE_SCHEME}://{conn_id}/{table}")


def report_file_asset(path: str) -> Asset:
    """A Parquet report file, named by its location: ``file:///abs/path`` for absolute paths,
    the normalised URL for URLs (``s3://bucket/key``), as in the OpenLineage events.

    A relative path only means something on the worker that resolves it, so it gets a
    scheme of its own rather than a ``file://`` URI that would point elsewhere.
    """
    if "://" in path or posixpath.isabs(path):
        return file_location(path).asset()
    return Asset(name=f"polyv_report_file/{path}", uri=f"{FILE_SCHEME}:///{path}")


def input_asset(path: str) -> Asset | None:
    """The Parquet input as an inlet, when its location is known where the DAG is parsed (an
    absolute path or a URL); ``None`` for a relative path."""
    if "://" in path or posixpath.isabs(path):
        return file_location(path).asset()
    return None


def sync_alias(dag_id: str, task_id: str) -> AssetAlias:
    """The alias through which a sync task names, at run time, the real locations it wrote: the
    report (its file, or its table with the connection's host and database), the sync state
    table and POLYV's viewer values of the appId (when something was sent). A downstream DAG can
    schedule on the alias or on any of those assets, e.g.
    ``Asset("postgres://db:5432/wh/public/polyv_sync_report")``."""
    return AssetAlias(name=f"polyv_sync/{dag_id}/{task_id}")


def sync_report_asset(dag_id: str, task_id: str) -> Asset:
    """The report of one sync task, wherever it is written (each event's extra says where)."""
    return Asset(name=f"polyv_report/{dag_id}/{task_id}", uri=f"{TASK_SCHEME}://{dag_id}/{task_id}")


# ---- the report as a place ---------------------------------------------------------------------
#: The summary keys an asset event carries in its ``extra`` (beside ``reportFile``).
EVENT_KEYS = ("runId", "airflowRunId", "appId", "ok", "exitCode", "items", "counts", "dryRun", "report", "runPage")


def templated(*values: str) -> bool:
    """Whether any of ``values`` is a Jinja template (its value is unknown at parse time)."""
    return any("{{" in v or "{%" in v for v in values)


def task_outlets(
    *,
    table_conn: str | None,
    report_table: str | None,
    report_path: str | None,
    report_dir: str | None,
    dag_id: str | None,
    task_id: str,
) -> list[Asset | AssetAlias]:
    """A sync task's report asset(s), from its arguments as written in the DAG file (``dag_id``:
    None for a task outside a DAG).

    Templated names are unknown at parse time, so a templated report gets the task's own
    report asset instead; each asset event's ``extra`` names the concrete location.
    """
    fixed_table = report_table and table_conn and not templated(report_table, table_conn)
    # The DAG's report folder is known when report_dir is (report_path is then a name in it,
    # templated or not), or from a fixed absolute report_path.
    fixed_dir = report_dir if report_dir and not templated(report_dir) else None
    fixed_path = report_path if report_path and not templated(report_path) else None
    # One asset per place (the table, the DAG's report folder), never one per run's file.
    outlets: list[Asset | AssetAlias] = list(
        report_place_assets(
            dag_id or "dag",
            report_dir=fixed_dir if report_path else None,
            report_path=None if report_dir else fixed_path,
            report_table=report_table if fixed_table else None,
            conn_id=table_conn,
        )
    )
    if dag_id is not None:
        if not outlets and (report_table or report_path):
            outlets.append(sync_report_asset(dag_id, task_id))
        # The real locations (known when the task runs) come as events through the alias.
        outlets.append(sync_alias(dag_id, task_id))
    return outlets


def report_folder(dag_id: str, *, report_dir: str | None = None, report_path: str | None = None) -> str | None:
    """The folder of a DAG's Parquet reports, when it is known where the DAG is parsed:
    ``<report_dir>/<dag_id>`` (the example DAGs' layout: ``report_path`` is a name under
    ``report_dir``), else the folder of an absolute (or URL) ``report_path``; ``None`` for a
    relative path without ``report_dir`` (it names a place only on the worker that resolves it).
    Templated arguments are the caller's to leave out."""
    if report_dir and report_dir.strip():
        return posixpath.join(report_dir.strip(), dag_id)
    path = (report_path or "").strip()
    if path and ("://" in path or posixpath.isabs(path)):
        return posixpath.dirname(path.rstrip("/")) or "/"
    return None


def report_place_assets(
    dag_id: str,
    *,
    report_dir: str | None = None,
    report_path: str | None = None,
    report_table: str | None = None,
    conn_id: str | None = None,
) -> list[Asset]:
    """The report's place(s) as assets: the report table (through its connection), and the DAG's
    report folder (:func:`report_folder`). One asset per place, not per run: every run's event
    goes to the same asset, and the run's own file rides in the event's extra
    (:func:`report_event_extra`), so a downstream DAG schedules on the place
    (``schedule=[report_place_assets("my_dag", report_dir=...)[0]]``)."""
    places: list[Asset] = []
    if report_table and report_table.strip() and conn_id:
        places.append(report_table_asset(conn_id, report_table.strip()))
    folder = report_folder(dag_id, report_dir=report_dir, report_path=report_path)
    if folder is not None:
        places.append(file_location(folder).asset())
    return places


def report_event_extra(summary: dict[str, Any], *, report_file: str | None = None) -> dict[str, Any]:
    """What an asset event of the report's place carries: the run (``runId``, ``airflowRunId``,
    ``appId``), how it went (``ok``, ``exitCode``, ``items``, ``counts``, ``dryRun``), where its
    report and run page are, and ``reportFile``: this run's Parquet file as a URI (``None`` for a
    table-only report). ``summary`` is the operator's strict-JSON summary (secret already
    scrubbed); the extra is strict JSON too."""
    extra = {key: summary.get(key) for key in EVENT_KEYS}
    path = report_file or summary.get("reportPath")
    extra["reportFile"] = file_location(path).uri if path else None
    return extra


def as_place(located: Location, report_file: str | None) -> Location:
    """``located``, or, when it is the run's own report file, the folder that holds it: an
    asset is a place, and the file rides in the event's extra (``reportFile``)."""
    if report_file and located.uri == file_location(report_file).uri:
        return file_location(posixpath.dirname(report_file.rstrip("/")) or "/")
    return located


def emit_asset_events(
    events: Any,
    outlets: Sequence[Any],
    summary: Mapping[str, Any],
    written: Callable[[Mapping[str, Any]], Sequence[Location]],
    log: Any,
) -> None:
    """Record a finished run's asset events in ``events`` (the task context's ``outlet_events``):
    the run's :func:`report_event_extra` on each declared asset (a place: the table, the DAG's
    report folder), and one event per place the run wrote (from ``written(summary)``, a report
    file named by its folder) through each alias. Best effort: an event never fails a run."""
    if events is None:
        return
    report_file = summary.get("reportPath")
    extra = report_event_extra(dict(summary))
    for outlet in outlets:
        try:
            if isinstance(outlet, Asset):
                events[outlet].extra.update(extra)
            elif isinstance(outlet, AssetAlias):
                places = {p.uri: p for p in (as_place(w, report_file) for w in written(summary))}
                for located in places.values():
                    events[outlet].add(located.asset(), extra=extra)
        except Exception as exc:  # an event is a nicety, never a reason to fail
            log.debug("could not record an asset event for %s: %s", outlet, exc)
