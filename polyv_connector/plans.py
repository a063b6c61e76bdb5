"""Plan, then apply exactly the plan: what both front ends (``polyv-sync plan`` / ``apply``, the
operator's ``mode="plan"`` / ``mode="apply"``) build around the engine.

* **plan**: a dry run (nothing sent but the field-list preflight, no state moved) whose engine
  writes the items it would send, with their kinds, into a :class:`~polyv_connector.planfile.PlanWriter`
  (:attr:`polyv_connector.engine.sync.Run.plan`). :func:`finish_plan` then signs the file with
  the run's numbers: the limits and their breaches, the state it was made against and the
  state's position and content digest.
* **apply**: :func:`open_plan` verifies the file (the account, the HMAC, the items' checksum)
  and that the state has not moved since (:meth:`StateStore.position`), and gives the run's
  parts: a :class:`PlanSource` that reads the plan's items, the options of the plan (its slice,
  its state; ``planned``: no diff, no limits) and a :class:`CheckedState` that checks, under the
  state's lock, that the state holds what it held when the plan was made. Every refusal is a
  :class:`~polyv_connector.planfile.PlanRefused` (exit 2), raised before anything is sent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from polyv_connector import planfile
from polyv_connector.config import ColumnMapping, SyncOptions
from polyv_connector.partitioning import WHOLE, Slice
from polyv_connector.planfile import PlanRefused
from polyv_connector.state.store import StateRun, StateStore

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from polyv_connector.config import Credentials
    from polyv_connector.engine.result import SyncResult
    from polyv_connector.run import Front, Prepared
    from polyv_connector.runspec import RunSpec

log = logging.getLogger("polyv_connector")

#: The settings a plan fixes: an apply takes them from the plan, never from its own settings.
FIXED_BY_PLAN = ("input_path", "source_conn_id", "source_sql", "source_table", "partitions", "partition")


def state_digest(keys: np.ndarray, fps: np.ndarray) -> str:
    """A digest of what a run loaded from the state (its sorted keys and their fingerprints)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(keys.tobytes())
    h.update(fps.tobytes())
    return h.hexdigest()


def state_where(spec: RunSpec, state: StateStore | None) -> dict[str, Any]:
    """Which state a run plans against: the folder (absolute), or the table and its connection."""
    if spec.options.state_dir:
        return {"stateDir": os.path.abspath(spec.options.state_dir)}
    if state is not None:
        return {"stateTable": spec.state_table, "stateConnId": spec.state_conn}
    return {}


class CheckedState:
    """A state store whose run's :meth:`StateRun.load` notes (plan) or checks (apply) the digest
    of what it loads; everything else is the wrapped store's."""

    def __init__(self, inner: StateStore, expected: str | None = None, setting: str = "plan_path") -> None:
        self.inner = inner
        self.expected = expected
        self.setting = setting
        self.loaded: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def open(
        self, run_id: str, part: Slice = WHOLE, timeout_s: float = 0.0, dry_run: bool = False
    ) -> AbstractContextManager[StateRun]:
        return self._opened(run_id, part, timeout_s, dry_run)

    @contextmanager
    def _opened(self, run_id: str, part: Slice, timeout_s: float, dry_run: bool) -> Iterator[StateRun]:
        with self.inner.open(run_id, part, timeout_s, dry_run) as held:
            yield _CheckedRun(held, self)

    def as_store(self) -> StateStore:
        return cast("StateStore", self)


class _CheckedRun(StateRun):
    def __init__(self, held: StateRun, owner: CheckedState) -> None:
        super().__init__(held.store, held.run_id, held.part, held.seq, held.dry_run)
        self._owner = owner

    def load(self, *, reset_corrupt: bool = False) -> tuple[np.ndarray, np.ndarray]:
        keys, fps = super().load(reset_corrupt=reset_corrupt and self._owner.expected is None)
        owner = self._owner
        owner.loaded = state_digest(keys, fps)
        if owner.expected is not None and owner.loaded != owner.expected:
            raise PlanRefused(
                owner.setting,
                "the sync state changed since the plan was made (another run recorded into it): "
                "nothing was sent; make a new plan",
            )
        return keys, fps


@dataclass(frozen=True)
class PlanSource:
    """The plan's items as a run's source (long form; the plan's own slice)."""

    path: str
    setting: str = "plan_path"

    def check_columns(self, mapping: ColumnMapping) -> None:
        return None  # verified by open_plan: the plan file's own four columns

    def unchanged_in_source(self, columns: list[str], part: Slice = WHOLE) -> int | None:
        return None

    def batches(self, columns: list[str], batch_rows: int, part: Slice = WHOLE) -> Iterator[pa.RecordBatch]:
        for batch in planfile.batches(self.path, batch_rows, self.setting):
            yield batch.select(list(planfile.COLUMNS[:3]))


def check_plan_path(path: str | None, setting: str, *, input_path: str | None = None) -> str:
    """The plan file's path, checked as an output (never the input, nothing a browser would run)."""
    from polyv_connector.paths import check_output_file, is_url

    if not path:
        raise PlanRefused(setting, "name the plan file (a .parquet path)")
    if is_url(path):
        raise PlanRefused(setting, "a plan is a local file (shared storage on a cluster), not a URL")
    if not path.lower().endswith(".parquet"):
        raise PlanRefused(setting, f"a plan file's name must end in .parquet: {os.path.basename(path)!r}")
    check_output_file(path, setting, input_path=input_path)
    return path


def plan_options(options: SyncOptions) -> SyncOptions:
    """A plan run's options: a dry run (nothing sent but the preflight, no state moved)."""
    return dataclasses.replace(options, dry_run=True)


def finish_plan(
    writer: planfile.PlanWriter,
    result: SyncResult,
    spec: RunSpec,
    secret: str,
    *,
    where: Mapping[str, Any],
    position: str | None,
    digest: str | None,
    run_page: str | None = None,
) -> dict[str, Any]:
    """Sign and close the plan; returns its summary (strict JSON, no secret)."""
    options = spec.options
    summary = {
        "appId": result.app_id,
        "planRunId": result.run_id,
        "createdAt": _now_iso(),
        "source": spec.input_path or spec.source_table or ("query" if spec.source_sql else None),
        "partitions": options.partitions,
        "partition": options.partition,
        "fullRefresh": options.full_refresh,
        "limits": _limits(spec),
        "breaches": [{"code": b.code, "setting": b.setting, "message": b.message} for b in result.breaches],
        "breached": bool(result.breaches),
        "state": {**where, "position": position, "digest": digest},
        "removed": result.removed,
        "counts": {k: v for k, v in result.counts.items() if v},
        "report": result.report_location,
        "runPage": run_page,
    }
    return writer.close(summary, secret)


def _limits(spec: RunSpec) -> dict[str, Any]:
    names = ("max_changed_fraction", "change_limit_min_items", "max_source_shrink")
    opts = spec.options
    return {n: getattr(opts, n, getattr(spec, n, None)) for n in names}


def _now_iso() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def public_summary(summary: Mapping[str, Any], path: str) -> dict[str, Any]:
    """What a plan's summary shows a person (XCom, the approval step): no first changes' values."""
    shown = {k: v for k, v in summary.items() if k not in ("firstChanges",)}
    return {**shown, "planPath": path}


@dataclass
class OpenedPlan:
    """A verified plan and the run it makes: its source, options and checked state."""

    summary: dict[str, Any]
    source: PlanSource
    options: SyncOptions
    state: CheckedState | None


def open_plan(
    path: str,
    setting: str,
    options: SyncOptions,
    app_id: str,
    secret: str,
    state: StateStore | None,
    where: Mapping[str, Any],
) -> OpenedPlan:
    """Verify the plan at ``path`` for account ``app_id`` and the state the apply names
    (``state``/``where``: the apply's, which must be the plan's), and build the apply's parts.

    ``options`` are the apply's (its transport settings, and ``dry_run``: report the plan's items,
    send nothing); the plan fixes the slice and the mapping; the items are sent as they are
    (``planned``: no diff, no limits)."""
    summary = planfile.verify(path, app_id, secret, setting)
    planned_where = {k: v for k, v in (summary.get("state") or {}).items() if k not in ("position", "digest")}
    if dict(where) != planned_where:
        raise PlanRefused(
            setting,
            f"the plan was made against the state {_describe(planned_where)}, not {_describe(where)}: "
            "apply it with the plan's own state",
        )
    expected = (summary.get("state") or {}).get("position")
    if state is not None:
        now = state.position()
        if now != expected:
            raise PlanRefused(
                setting,
                "the sync state moved since the plan was made (another run took it): nothing was sent; make a new plan",
            )
    opts = dataclasses.replace(
        options,
        mapping=ColumnMapping(),
        planned=True,
        full_refresh=False,
        max_rejected_fraction=None,
        expectations_path=None,
        partitions=int(summary.get("partitions") or 1),
        partition=int(summary.get("partition") or 0),
    )
    checked = None
    if state is not None:
        checked = CheckedState(state, (summary.get("state") or {}).get("digest"), setting)
    log.info(
        "applying the plan %s: %s items (%s), made %s",
        path,
        f"{summary.get('items', 0):,}",
        ", ".join(f"{k} {v:,}" for k, v in (summary.get("byKind") or {}).items() if v) or "nothing",
        summary.get("createdAt"),
    )
    return OpenedPlan(summary, PlanSource(path, setting), opts, checked)


def _describe(where: Mapping[str, Any]) -> str:
    if where.get("stateDir"):
        return f"folder {where['stateDir']}"
    if where.get("stateTable"):
        return f"table {where['stateTable']} (connection {where.get('stateConnId')})"
    return "none"


def folder_state(spec: RunSpec, app_id: str) -> StateStore | None:
    """The folder state of ``state_dir`` (what :func:`polyv_connector.run.assemble` would make)."""
    if not spec.options.state_dir:
        return None
    from polyv_connector.state.folder import SyncState

    return SyncState(spec.options.state_dir, app_id, implicit_lock=False)


@dataclass
class Moded:
    """A run prepared for its mode: the parts, the options to run with, and for a plan its writer."""

    spec: RunSpec
    prepared: Prepared
    writer: planfile.PlanWriter | None = None
    checked: CheckedState | None = None
    position: str | None = None
    where: dict[str, Any] = dataclasses.field(default_factory=dict)
    applied: dict[str, Any] | None = None

    @property
    def state(self) -> StateStore | None:
        """The state the engine runs with (checked in a plan or an apply)."""
        return self.checked.as_store() if self.checked is not None else self.prepared.state

    def finish(self, result: SyncResult, secret: str, run_page: str | None) -> dict[str, Any] | None:
        """A plan run: sign and close the plan (none when a data-quality gate failed or the run
        stopped: the writer is dropped) and put its public summary in the result (``plan``). An
        apply: name the plan in the result (``appliedPlan``)."""
        if self.applied is not None:
            result.extra["appliedPlan"] = self.applied
            return None
        if self.writer is None:
            return None
        if result.gate_failures or result.aborted:
            self.writer.abort()
            return None
        path = os.path.abspath(str(self.writer.path))
        full = finish_plan(
            self.writer,
            result,
            self.spec,
            secret,
            where=self.where,
            position=self.position,
            # A diff in the warehouse loads no copy of the state: only the position is checked.
            digest=self.checked.loaded if self.checked and self.prepared.diff == "local" else None,
            run_page=os.path.abspath(run_page) if run_page and "://" not in run_page else run_page,
        )
        shown = public_summary(full, path)
        result.extra["plan"] = shown
        return shown

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Drop the partial plan if the run raises (a plan file appears only once signed)."""
        try:
            yield
        except BaseException:
            self.abort()
            raise


def prepare_mode(
    spec: RunSpec,
    credentials: Credentials,
    front: Front,
    *,
    facts: dict[str, Any] | None = None,
    check_columns: bool = False,
    setting: str = "plan_path",
) -> Moded:
    """The run's parts for its ``mode`` (:func:`polyv_connector.run.prepare` for ``run``). A plan
    is a dry run with a plan writer at ``plan_path``; an apply reads the verified plan at
    ``plan_path`` (its items, slice and state) and checks the state has not moved."""
    from polyv_connector.run import Prepared, make_report, prepare

    facts = facts if facts is not None else {}
    if spec.mode == "run":
        return Moded(spec, prepare(spec, credentials, front, facts=facts, check_columns=check_columns))
    path = check_plan_path(spec.plan_path, setting, input_path=spec.input_path if spec.mode == "plan" else None)
    state: StateStore | None
    if spec.mode == "plan":
        if spec.report_path and os.path.abspath(path) == os.path.abspath(spec.report_path):
            raise PlanRefused(setting, "is the report path; give another file")
        spec = dataclasses.replace(spec, options=plan_options(spec.options))
        prepared = prepare(spec, credentials, front, facts=facts, check_columns=check_columns)
        state = prepared.state or folder_state(spec, credentials.app_id)
        checked = CheckedState(state) if state is not None else None
        position = state.position() if state is not None else None  # before the plan reads it
        facts["plan_path"] = path
        return Moded(spec, prepared, planfile.PlanWriter(path, setting), checked, position, state_where(spec, state))
    # apply: the plan's state and slice; the items from the plan, never the source.
    if spec.options.state_dir:
        state = folder_state(spec, credentials.app_id)
    else:
        from polyv_connector.run import make_state_table

        state = make_state_table(spec, credentials.app_id, "local", front, facts)
    opened = open_plan(
        path,
        setting,
        spec.options,
        credentials.app_id,
        credentials.app_secret.reveal(),
        state,
        state_where(spec, state),
    )
    spec = dataclasses.replace(spec, options=opened.options, input_path=None, suite_path=None)
    report = make_report(spec, front, facts)
    facts.update(source_kind="file", source_path=path, source_desc=f"plan {path}")
    prepared = Prepared(source=opened.source, report=report, diff="local", state=state, facts=facts)
    applied = {"path": os.path.abspath(path), "planRunId": opened.summary.get("planRunId")}
    return Moded(spec, prepared, checked=opened.state, applied=applied)


def recorded_breach(result: SyncResult, mode: str) -> bool:
    """Whether a plan run's only trouble is a change-limit breach, recorded in the plan (the
    approval step's question): such a plan run succeeds (exit 0)."""
    return mode == "plan" and bool(result.breaches) and not result.gate_failures and not result.aborted
