"""``polyv-sync plan`` and ``polyv-sync apply``: the command line over :mod:`polyv_connector.plans`.

``plan --out PLAN`` takes every option of ``run`` and exits 0 once the plan is written, a
change-limit breach included (recorded in the plan: applying it is the approval); a failed
data-quality gate exits 4 and writes no plan. ``apply --plan PLAN --report REPORT`` sends the
plan's items and nothing else; it refuses (exit 2, nothing sent) a plan of another account, an
altered one, or one made before another run changed its state.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from polyv_connector import exit_codes, runspec
from polyv_connector.cli import _check_outputs, _stop_on_signals, _write_run_page, add_run_arguments, spec_from_args
from polyv_connector.config import Credentials
from polyv_connector.errors import ConfigError

if TYPE_CHECKING:
    from polyv_connector.engine.result import SyncResult

#: The run settings ``apply`` takes besides ``--plan``: where it reports and keeps its state, and
#: how it sends (the plan fixes what is sent and from which slice).
APPLY_SETTINGS = frozenset(
    {
        "report_path",
        "summary_json",
        "state_dir",
        "batch_size",
        "concurrency",
        "max_rps",
        "max_attempts",
        "timeout",
        "signature_method",
        "check_fields",
        "budget_url",
        "budget_rps",
        "lock_timeout",
        "report_rows",
        "seed",
    }
)


def add_plan_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    credentials = "Credentials come from POLYV_APP_ID and POLYV_APP_SECRET (the plan is signed with the appSecret)."
    plan = sub.add_parser(
        "plan",
        help="write what a run would send (items and kinds, signed) without sending it",
        description="Reads, checks, validates and diffs like `run`, sends nothing but the field-list "
        "preflight, moves no state, and writes the plan (Parquet) and its preview page. Exits 0 with a "
        "change-limit breach recorded in the plan. " + credentials,
    )
    plan.add_argument("--out", dest="plan_out", required=True, metavar="PLAN", help="the plan file (.parquet)")
    add_run_arguments(plan)
    plan.set_defaults(func=cmd_plan)
    apply = sub.add_parser(
        "apply",
        help="send exactly the items of a plan (refused if altered, another account's, or stale)",
        description="Sends the plan's items, not what the source says now, and records them in the "
        "plan's state; change limits are not checked again (applying is the approval). " + credentials,
    )
    apply.add_argument("--plan", dest="plan_in", required=True, metavar="PLAN", help="the plan file to apply")
    add_run_arguments(apply, only=APPLY_SETTINGS)
    apply.set_defaults(func=cmd_apply)


def cmd_plan(args: argparse.Namespace) -> int:
    from polyv_connector import plans
    from polyv_connector.engine.result import new_run_id
    from polyv_connector.planfile import PlanWriter
    from polyv_connector.run import Front, prepare, run_page_path, sync

    spec = spec_from_args(args)
    credentials = Credentials.from_env()
    if not spec.input_path or not spec.report_path:
        raise ConfigError(spec.label("input_path" if not spec.input_path else "report_path"), "is required")
    _check_outputs(spec, spec.input_path, spec.report_path)
    out = plans.check_plan_path(args.plan_out, "--out", input_path=spec.input_path)
    if os.path.abspath(out) == os.path.abspath(spec.report_path):
        raise ConfigError("--out", "is the report path; give another file")
    front = Front(label=spec.label)
    prepared = prepare(spec, credentials, front, check_columns=True)
    state = prepared.state or _folder_state(spec, credentials.app_id)
    checked = plans.CheckedState(state) if state is not None else None
    position = state.position() if state is not None else None  # before the plan reads it
    writer = PlanWriter(out, "--out")
    run_id = new_run_id()
    page_path = run_page_path(spec, front)
    circuit = _circuit()
    try:
        with _stop_on_signals(circuit) as received, spec.open_budget(credentials.base_url, run_id) as budget:
            result = sync(
                prepared.source,
                credentials,
                plans.plan_options(spec.options),
                prepared.report,
                validator=prepared.validator,
                state=checked.as_store() if checked else None,
                budget=budget,
                run_id=run_id,
                seed=spec.seed,
                stop=circuit,
                plan=writer,
            )
        if received:
            writer.abort()
            return received[0].code
        if result.gate_failures or result.aborted:
            writer.abort()
            return _finish(result, spec, page_path, None, failed=True)
        summary = plans.finish_plan(
            writer,
            result,
            spec,
            credentials.app_secret.reveal(),
            where=plans.state_where(spec, state),
            position=position,
            digest=checked.loaded if checked else None,
            run_page=os.path.abspath(page_path),
        )
    except BaseException:
        writer.abort()
        raise
    return _finish(result, spec, page_path, plans.public_summary(summary, os.path.abspath(out)), plan_full=summary)


def cmd_apply(args: argparse.Namespace) -> int:
    from polyv_connector import plans
    from polyv_connector.engine.result import new_run_id
    from polyv_connector.planfile import read_summary
    from polyv_connector.run import Front, make_report, run_page_path, sync

    given = {k: getattr(args, k) for k in APPLY_SETTINGS if getattr(args, k, None) is not None}
    credentials = Credentials.from_env()
    path = args.plan_in
    summary = read_summary(path, "--plan")
    planned_dir = (summary.get("state") or {}).get("stateDir")
    given.setdefault("state_dir", planned_dir)
    spec = runspec.resolve(given, front="cli")
    if not spec.report_path:
        raise ConfigError("--report", "is required")
    _check_outputs(spec, path, spec.report_path)
    state = _folder_state(spec, credentials.app_id)
    opened = plans.open_plan(
        path,
        "--plan",
        spec.options,
        credentials.app_id,
        credentials.app_secret.reveal(),
        state,
        plans.state_where(spec, state),
    )
    front = Front(label=spec.label)
    report = make_report(spec, front, {})
    run_id = new_run_id()
    circuit = _circuit()
    with _stop_on_signals(circuit) as received, spec.open_budget(credentials.base_url, run_id) as budget:
        result = sync(
            opened.source,
            credentials,
            opened.options,
            report,
            state=opened.state.as_store() if opened.state else None,
            budget=budget,
            run_id=run_id,
            seed=spec.seed,
            stop=circuit,
        )
    result.extra["appliedPlan"] = {"path": os.path.abspath(path), "planRunId": summary.get("planRunId")}
    code = _finish(result, spec, run_page_path(spec, front), None)
    return received[0].code if received else code


def _circuit() -> Any:
    from polyv_connector.sender import Circuit

    return Circuit()


def _folder_state(spec: runspec.RunSpec, app_id: str) -> Any:
    if not spec.options.state_dir:
        return None
    from polyv_connector.state.folder import SyncState

    return SyncState(spec.options.state_dir, app_id, implicit_lock=False)


def _finish(
    result: SyncResult,
    spec: runspec.RunSpec,
    page_path: str,
    plan: dict[str, Any] | None,
    *,
    plan_full: dict[str, Any] | None = None,
    failed: bool = False,
) -> int:
    """Print the run's lines, write its page (with the plan's preview) and summary JSON; the exit
    status: a plan exits 0 with a limit breach recorded (applying it is the approval)."""
    if plan_full is not None:
        result.extra["plan"] = {**plan_full, "planPath": plan["planPath"] if plan else None}
    print(result.summary_line(), flush=True)
    print(f"report: {result.report_location}", flush=True)
    page = _write_run_page(result, page_path, spec.report_path or "")
    if plan is not None:
        result.extra["plan"] = plan  # the summary JSON: no first changes' values
        print(f"plan: {plan['planPath']} ({plan['items']:,} items; limits breached: {plan['breached']})", flush=True)
    if spec.summary_json:
        with open(spec.summary_json, "w", encoding="utf-8") as f:
            json.dump({**result.to_dict(), "runPage": page}, f, indent=2, allow_nan=False)
    if plan is not None and not failed:
        # Only a change-limit breach may be recorded in a plan; anything else keeps its code.
        code = result.exit_code
        return exit_codes.OK.code if code == exit_codes.GATE.code and not result.gate_failures else code
    return result.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(1)
