"""The Airflow plugin that serves run pages, reports and Data Docs from the API server.

``GET /polyv/files/<absolute path>`` answers with that file when it lies under one of the
configured folders (``[polyv] served_dirs``, comma-separated; default
``$AIRFLOW_HOME/polyv_reports`` and ``$AIRFLOW_HOME/polyv_validation``, the operator's default
report and validation folders), and 404 otherwise: a path with ``..``, a symlink leading out,
a folder, or a file anywhere else are all "not found", so the answer says nothing about what
exists outside. Only logged-in Airflow users get an answer (the UI's session cookie or a
bearer token), and only those allowed to read task instances.

The folders must be the workers' report folders as the API server sees them: one machine, or a
shared mount. For several hosts, write reports to object storage instead (see the README).

Registered through the entry point ``airflow.plugins`` (setup.cfg).
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from polyv_connector.airflow.conntest import PolyvConnectionTestMiddleware
from polyv_connector.airflow.links import FILES_ROUTE, URL_PREFIX
from polyv_connector.deployment import VALIDATION_FOLDER, airflow_home, default_report_dir

#: Served as a download rather than shown (a browser cannot show Parquet).
_DOWNLOAD = {".parquet": "application/vnd.apache.parquet"}


def default_served_dirs() -> list[str]:
    return [default_report_dir(), os.path.join(airflow_home(), VALIDATION_FOLDER)]


def served_dirs_from_config() -> list[str]:
    """``[polyv] served_dirs`` (``AIRFLOW__POLYV__SERVED_DIRS``), else the defaults."""
    from airflow.configuration import conf

    raw = conf.get("polyv", "served_dirs", fallback="") or ""
    dirs = [d.strip() for d in raw.split(",") if d.strip()]
    return dirs or default_served_dirs()


def resolve_served_file(requested: str, roots: Sequence[str]) -> Path | None:
    """The file ``requested`` (an absolute path, leading ``/`` optional) if it lies under one of
    ``roots`` once every symlink and ``..`` is resolved, and is a regular file; else None."""
    if "\x00" in requested or not requested.strip("/"):
        return None
    candidate = Path("/" + requested.lstrip("/"))
    if any(part == ".." for part in candidate.parts):
        return None
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    for root in roots:
        try:
            real_root = Path(root).resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if real.is_relative_to(real_root) and real != real_root and real.is_file():
            return real
    return None


def create_app(roots: Sequence[str] | None = None, *, authenticate: bool = True) -> Any:
    """The FastAPI app mounted at ``/polyv``. ``roots`` default to the configuration, read per
    request (so a changed setting needs no restart); ``authenticate=False`` for unit tests."""
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse

    dependencies = []
    if authenticate:
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
        from airflow.api_fastapi.core_api.security import requires_access_dag

        # Reading a report is reading task results: the permission to read task instances
        # (of every DAG: the path does not tell which DAG a file belongs to).
        dependencies.append(Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE)))

    app = FastAPI(title="POLYV run pages", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get(FILES_ROUTE + "/{requested:path}", dependencies=dependencies)
    def serve(requested: str) -> FileResponse:
        path = resolve_served_file(requested, roots if roots is not None else served_dirs_from_config())
        if path is None:
            raise HTTPException(status_code=404, detail="not found")
        suffix = path.suffix.lower()
        if suffix in _DOWNLOAD:
            return FileResponse(path, media_type=_DOWNLOAD[suffix], filename=path.name)
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = {"X-Content-Type-Options": "nosniff"}
        if media == "text/html":
            # Our page loads nothing; GX's Data Docs load their CSS/JS from CDNs: no tighter here.
            headers["Cache-Control"] = "no-cache"
        return FileResponse(path, media_type=media, headers=headers)

    return app


class PolyvPlugin(AirflowPlugin):
    """Serves the run pages, reports and Data Docs the operator's extra links point at.

    The links themselves are declared on the operator (``operator_extra_links``) and in the
    provider info (``extra-links``): Airflow 3 stores each link as an XCom when the task ends.
    """

    name = "polyv"
    fastapi_apps = [  # noqa: RUF012 - AirflowPlugin declares it a plain class attribute
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "POLYV run pages"}
    ]
    # The connection list's Test button on Airflow 3.3 (see polyv_connector.airflow.conntest).
    fastapi_root_middlewares = [  # noqa: RUF012
        {"middleware": PolyvConnectionTestMiddleware, "args": [], "kwargs": {}, "name": "POLYV connection test"}
    ]
