"""Where the operator writes, per DAG, and who may write a report name again.

* Every DAG writes under ``<report folder>/<dag_id>/`` (run pages, reports named at trigger
  time, the engine's fallback report) and ``$AIRFLOW_HOME/polyv_validation/<dag_id>/``: the
  plugin serves a DAG's files only from its own folders, so one DAG's trigger can neither
  overwrite nor expose another DAG's files.
* A report name given under a report folder must end in ``.parquet`` (nothing a browser would
  run), and a name that already exists is refused unless an earlier try of the same task
  instance wrote it: a hidden owner file next to the report records which task instance did.

Cheap to import (the plugin and the operator module import it); nothing here imports Airflow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from polyv_connector.deployment import VALIDATION_FOLDER, airflow_home, default_report_dir
from polyv_connector.errors import ConfigError

if TYPE_CHECKING:
    from polyv_connector.runspec import RunSpec

#: The only suffix a report name given at trigger time may have.
REPORT_SUFFIX: Final = ".parquet"


def default_validation_dir() -> str:
    """Where validation results and Data Docs go when no folder is named."""
    return os.path.join(airflow_home(), VALIDATION_FOLDER)


def dag_folder_name(dag_id: str) -> str | None:
    """``dag_id`` as a folder name (Airflow allows letters, digits, ``_.-``), None for one that
    is no single folder name (``.``, ``..``, a separator, NUL)."""
    if not dag_id or dag_id in (".", "..") or any(c in dag_id for c in "/\\\x00"):
        return None
    return dag_id


def dag_folder(root: str, dag_id: str, setting: str = "report_dir") -> str:
    """``root/<dag_id>``: the DAG's own folder under a report or validation folder."""
    name = dag_folder_name(dag_id)
    if name is None:
        raise ConfigError(setting, f"the DAG id {dag_id!r} cannot name a folder")
    return os.path.join(root, name)


def check_report_name(name: str, setting: str) -> None:
    """Refuse a report name that does not end in ``.parquet`` (``evil.html``, ``x.svg``)."""
    if not name.lower().endswith(REPORT_SUFFIX) or name.endswith("/"):
        raise ConfigError(setting, f"a report name must end in {REPORT_SUFFIX}: {name!r}")


@dataclass(frozen=True)
class Writer:
    """The task instance writing a report (its tries share the report's name)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    @classmethod
    def of(cls, dag_id: str, task_id: str, context: Mapping[str, Any]) -> Writer:
        """The task instance a task's execution ``context`` names."""
        map_index = getattr(context.get("ti"), "map_index", -1)
        return cls(dag_id, str(context.get("run_id") or ""), task_id, map_index if isinstance(map_index, int) else -1)


def owner_file(report_path: str) -> Path:
    """The hidden file naming the task instance that wrote ``report_path`` (a leading dot: Arrow
    datasets and most readers skip it when they read the folder)."""
    path = Path(report_path)
    return path.with_name(f".{path.name}.owner")


def _owner(marker: Path) -> Writer | None:
    try:
        raw = json.loads(marker.read_text(encoding="utf-8"))
        return Writer(str(raw["dag_id"]), str(raw["run_id"]), str(raw["task_id"]), int(raw["map_index"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def claim_report_name(report_path: str, writer: Writer, setting: str, *, also: tuple[str, ...] = ()) -> None:
    """Record ``writer`` as the owner of ``report_path``; refuse it when the report (or one of the
    files ``also`` names, such as its run page) exists and was not written by ``writer``."""
    marker = owner_file(report_path)
    owner = _owner(marker) if marker.exists() else None
    if owner is not None and owner != writer:
        raise ConfigError(setting, f"{os.path.basename(report_path)!r} exists already (another run wrote it)")
    if owner is None and any(os.path.lexists(p) for p in (report_path, *also)):
        raise ConfigError(setting, f"{os.path.basename(report_path)!r} exists already; choose another name")
    if owner == writer:
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: of two runs claiming one new name at once, exactly one wins.
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if _owner(marker) != writer:
            raise ConfigError(setting, f"{os.path.basename(report_path)!r} is being written by another run") from None
        return
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(writer), f)


def confine_task_paths(spec: RunSpec, writer: Writer) -> RunSpec:
    """``spec`` with its trigger-time paths held to where the DAG author allows. With a report
    folder, the report name must end in ``.parquet``, lands in ``<report folder>/<dag_id>/``
    and is refused if it exists, unless an earlier try of this task instance (``writer``) wrote
    it: a trigger cannot name (overwrite, or plant a page in) another DAG's or another run's files."""
    import dataclasses

    from polyv_connector.paths import is_url
    from polyv_connector.runpage import page_path_for
    from polyv_connector.trigger_paths import confine

    if spec.report_dir:
        if spec.report_path:
            check_report_name(spec.report_path, spec.label("report_path"))
        if spec.plan_path:
            check_report_name(spec.plan_path, spec.label("plan_path"))
        dag_dir = dag_folder(spec.report_dir, writer.dag_id, spec.label("report_dir"))
        spec = dataclasses.replace(spec, report_dir=dag_dir)
    spec = confine(spec)
    # A local report only: an object-store name is the bucket's to guard (no owner file there).
    if spec.report_dir and spec.report_path and not is_url(spec.report_path):
        page = page_path_for(spec.report_path)
        claim_report_name(spec.report_path, writer, spec.label("report_path"), also=(page,))
    # A plan is written like a report (its name claimed by the plan task); an apply only reads it.
    if spec.report_dir and spec.plan_path and spec.mode == "plan" and not is_url(spec.plan_path):
        claim_report_name(spec.plan_path, writer, spec.label("plan_path"))
    return spec


def dag_report_dir(spec: RunSpec, dag_id: str) -> str:
    """The DAG's report folder: ``<report_dir>/<dag_id>`` (``report_dir`` is made per DAG by
    :func:`confine_task_paths`), else ``$AIRFLOW_HOME/polyv_reports/<dag_id>``."""
    return spec.report_dir or dag_folder(default_report_dir(), dag_id)
