"""``polyv-sync plan`` and ``polyv-sync apply``: the command line over :mod:`polyv_connector.plans`.

``plan --out PLAN`` takes every option of ``run`` and exits 0 once the plan is written, a
change-limit breach included (recorded in the plan: applying it is the approval); a failed
data-quality gate exits 4 and writes no plan. ``apply --plan PLAN --report REPORT`` sends the
plan's items and nothing else; it refuses (exit 2, nothing sent) a plan of another account, an
altered one, or one made before another run changed its state.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
        "dry_run",
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
    spec = dataclasses.replace(spec_from_args(args), mode="plan", plan_path=args.plan_out)
    if not spec.input_path or not spec.report_path:
        raise ConfigError(spec.label("input_path" if not spec.input_path else "report_path"), "is required")
    _check_outputs(spec, spec.input_path, spec.report_path)
    return _run_mode(spec, "--out")


def cmd_apply(args: argparse.Namespace) -> int:
    from polyv_connector.planfile import read_summary

    given = {k: getattr(args, k) for k in APPLY_SETTINGS if getattr(args, k, None) is not None}
    # The plan names its state: a --state-dir given must be the same one (checked when opened).
    given.setdefault("state_dir", (read_summary(args.plan_in, "--plan").get("state") or {}).get("stateDir"))
    spec = dataclasses.replace(runspec.resolve(given, front="cli"), mode="apply", plan_path=args.plan_in)
    if not spec.report_path:
        raise ConfigError("--report", "is required")
    _check_outputs(spec, args.plan_in, spec.report_path)
    return _run_mode(spec, "--plan")


def _run_mode(spec: runspec.RunSpec, setting: str) -> int:
    from polyv_connector.engine.result import new_run_id
    from polyv_connector.plans import prepare_mode, recorded_breach
    from polyv_connector.run import Front, run_page_path, sync
    from polyv_connector.sender import Circuit

    credentials = Credentials.from_env()
    front = Front(label=spec.label)
    moded = prepare_mode(spec, credentials, front, check_columns=True, setting=setting)
    spec = moded.spec
    run_id = new_run_id()
    circuit = Circuit()
    page_path = run_page_path(spec, front)
    try:
        with _stop_on_signals(circuit) as received, spec.open_budget(credentials.base_url, run_id) as budget:
            result = sync(
                moded.prepared.source,
                credentials,
                spec.options,
                moded.prepared.report,
                validator=moded.prepared.validator,
                state=moded.state,
                budget=budget,
                run_id=run_id,
                seed=spec.seed,
                stop=circuit,
                plan=moded.writer,
            )
        if received:
            moded.abort()
            return received[0].code
        plan = moded.finish(result, credentials.app_secret.reveal(), page_path)
    except BaseException:
        moded.abort()
        raise
    code = _finish(result, spec, page_path, plan)
    return exit_codes.OK.code if recorded_breach(result, spec.mode) else code


def _finish(result: SyncResult, spec: runspec.RunSpec, page_path: str, plan: dict[str, Any] | None) -> int:
    """Print the run's lines, write its page (with the plan's preview) and its summary JSON."""
    print(result.summary_line(), flush=True)
    print(f"report: {result.report_location}", flush=True)
    page = _write_run_page(result, page_path, spec.report_path or "")
    if plan is not None:
        print(f"plan: {plan['planPath']} ({plan['items']:,} items; limits breached: {plan['breached']})", flush=True)
    if spec.summary_json:
        with open(spec.summary_json, "w", encoding="utf-8") as f:
            json.dump({**result.to_dict(), "runPage": page}, f, indent=2, allow_nan=False)
    return result.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(1)
