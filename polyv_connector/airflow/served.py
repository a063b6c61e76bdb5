"""Which file the plugin serves for a task instance, and how: pure functions over the task's
summary XCom and the served folders (no Airflow, no web framework: cheap to import and test).

A request names a task instance, a *kind* and a sub-path (see :mod:`polyv_connector.airflow.links`
for the URL). The file comes from that task instance's own summary, never from the client:

* the kind picks the folder the sub-path is resolved under: the run page's folder
  (``run-page``), the report's (``report``) or the Data Docs site's root (``data-docs``); the
  run page links to the report and the Data Docs relatively, so all three resolve from there;
* the resolved file (every ``..`` and symlink followed) must be one the summary names (the run
  page, the report, the validation result JSON) or lie inside the summary's Data Docs site;
* and it must lie inside ``<served folder>/<dag_id>/`` for the DAG named in the request path:
  even a summary that names another DAG's file (an XCom edited through the API) serves nothing
  of that DAG.

What is served runs no script on the Airflow origin: the run page carries a CSP header that
allows no script and sandboxes it, a report is a download, the Data Docs (GX loads scripts from
CDNs) run sandboxed in an opaque origin, everything with ``X-Content-Type-Options: nosniff``.
Anything else is "not found", whatever exists on disk.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

from polyv_connector.airflow.folders import dag_folder_name

Kind = Literal["run-page", "report", "data-docs"]
RUN_PAGE: Final = "run-page"
REPORT: Final = "report"
DATA_DOCS: Final = "data-docs"
KINDS: Final[tuple[str, ...]] = (RUN_PAGE, REPORT, DATA_DOCS)

#: The run page: inline style and inline SVG only, no script, no fetch, sandboxed.
RUN_PAGE_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
#: GX Data Docs need their scripts: they run, but in an opaque origin (no cookies, no same-origin API).
DATA_DOCS_CSP: Final = "sandbox allow-scripts"
#: Downloads and the validation JSON: should a browser ever render one, nothing in it runs.
INERT_CSP: Final = "default-src 'none'; sandbox"
PARQUET_MEDIA_TYPE: Final = "application/vnd.apache.parquet"


@dataclass(frozen=True)
class ServedFile:
    """A file to answer with: its real path, media type, headers, and the download name (None:
    shown inline)."""

    path: Path
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)
    download_name: str | None = None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _validation(summary: Mapping[str, Any]) -> Mapping[str, Any]:
    validation = summary.get("validation")
    return validation if isinstance(validation, Mapping) else {}


def named_path(summary: Mapping[str, Any], kind: str) -> str | None:
    """The file the summary names for ``kind`` (a local path or a URL), or None."""
    if kind == RUN_PAGE:
        return _text(summary.get("runPage"))
    if kind == REPORT:
        return _text(summary.get("reportPath"))
    if kind == DATA_DOCS:
        validation = _validation(summary)
        return _text(validation.get("dataDocsPage")) or _text(validation.get("dataDocs"))
    return None


def _is_url(path: str) -> bool:
    return "://" in path


def data_docs_root(summary: Mapping[str, Any]) -> str | None:
    """The Data Docs site's folder: that of its ``index.html`` (``dataDocs``), else the page's."""
    validation = _validation(summary)
    index = _text(validation.get("dataDocs")) or _text(validation.get("dataDocsPage"))
    if index is None or _is_url(index):
        return None
    return os.path.dirname(index)


def base_folder(summary: Mapping[str, Any], kind: str) -> str | None:
    """The folder a request's sub-path is resolved under (None: the summary names no such file)."""
    named = named_path(summary, kind)
    if named is None or _is_url(named):
        return None
    return data_docs_root(summary) if kind == DATA_DOCS else os.path.dirname(named)


def link_subpath(summary: Mapping[str, Any], kind: str) -> str | None:
    """The sub-path a link to ``kind`` carries (the named file relative to its base folder)."""
    named, base = named_path(summary, kind), base_folder(summary, kind)
    if named is None or base is None:
        return None
    return PurePosixPath(os.path.relpath(named, base).replace(os.sep, "/")).as_posix()


def _real(path: str | Path) -> Path | None:
    try:
        return Path(path).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None


def _relative_ok(subpath: str) -> bool:
    if "\x00" in subpath or "\\" in subpath:
        return False
    pure = PurePosixPath(subpath)
    return not pure.is_absolute() and ".." not in pure.parts


def resolve(
    summary: Mapping[str, Any] | None, kind: str, subpath: str, dag_id: str, roots: Sequence[str]
) -> ServedFile | None:
    """The file to serve for ``kind``/``subpath`` of a task instance of ``dag_id`` whose summary
    is ``summary``, or None ("not found"). ``roots`` are the served folders; an empty
    ``subpath`` is the file the summary names."""
    if not summary or kind not in KINDS:
        return None
    dag_folder = dag_folder_name(dag_id)
    base = base_folder(summary, kind)
    if dag_folder is None or base is None:
        return None
    subpath = subpath or (link_subpath(summary, kind) or "")
    if not subpath or not _relative_ok(subpath):
        return None
    real = _real(Path(base, *PurePosixPath(subpath).parts))
    if real is None or not real.is_file():
        return None
    # Inside <served folder>/<dag_id>/ of the DAG in the request path, symlinks resolved.
    dag_roots = [r for r in (_real(Path(root, dag_folder)) for root in roots if root) if r is not None]
    if not any(real.is_relative_to(root) and real != root for root in dag_roots):
        return None
    return _as_served(real, summary)


def _as_served(real: Path, summary: Mapping[str, Any]) -> ServedFile | None:
    """How ``real`` is served, by what the summary says it is (None: it names no such file)."""
    nosniff = {"X-Content-Type-Options": "nosniff"}
    page = _local(summary.get("runPage"))
    if page is not None and real == page:
        headers = {**nosniff, "Content-Security-Policy": RUN_PAGE_CSP, "Cache-Control": "no-cache"}
        return ServedFile(real, "text/html", headers)
    report = _local(summary.get("reportPath"))
    if report is not None and real == report:
        media = PARQUET_MEDIA_TYPE if real.suffix.lower() == ".parquet" else "application/octet-stream"
        return ServedFile(real, media, {**nosniff, "Content-Security-Policy": INERT_CSP}, download_name=real.name)
    result_json = _local(_validation(summary).get("resultJson"))
    if result_json is not None and real == result_json:
        return ServedFile(real, "application/json", {**nosniff, "Content-Security-Policy": INERT_CSP})
    docs = data_docs_root(summary)
    docs_root = _real(docs) if docs else None
    if docs_root is not None and real.is_relative_to(docs_root):
        media = mimetypes.guess_type(real.name)[0] or "application/octet-stream"
        headers = {**nosniff, "Content-Security-Policy": DATA_DOCS_CSP, "Cache-Control": "no-cache"}
        return ServedFile(real, media, headers)
    return None


def _local(value: Any) -> Path | None:
    text = _text(value)
    return None if text is None or _is_url(text) else _real(text)
