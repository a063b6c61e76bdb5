"""``polyv-sync``: the command line over :func:`polyv_connector.sync`.

Exit status (the table in :mod:`polyv_connector.exit_codes`): 0 all fine; 1 some items failed
or were not attempted; 2 configuration or input error, nothing sent; 3 POLYV stopped the run
(credentials, clock, IP block); 4 a gate stopped the run before sending (data quality or change
limit); 5 another run holds the sync state; 70 an internal error; 75 a dependency is unavailable,
retry later; 130/143 stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from polyv_connector import exit_codes, runspec
from polyv_connector.config import Credentials
from polyv_connector.errors import BusyError, ConfigError, DependencyUnavailable, PolyvConnectorError, StateError

if TYPE_CHECKING:
    from polyv_connector.budget import SharedBudget
    from polyv_connector.engine.result import SyncResult
    from polyv_connector.sender import Circuit

# Flags the CLI shows in its own groups; every other setting with a flag goes under "run".
_GROUPS = {
    "columns": ("viewer_id_column", "field_id_column", "value_column", "fields"),
    "sending": ("batch_size", "concurrency", "max_rps", "max_attempts", "timeout", "signature_method", "check_fields"),
}
_HIDDEN = frozenset({"read_batch_rows", "seed"})
_REQUIRED = frozenset({"input_path", "report_path"})


def add_run_arguments(p: argparse.ArgumentParser, only: frozenset[str] | None = None) -> None:
    """One flag per setting of :data:`runspec.SETTINGS` that has one (``only``: of these); defaults stay there.

    Every flag defaults to ``None`` (not given), so that :func:`runspec.resolve` can apply the
    environment and the built-in default in the one place they live.
    """
    groups = {name: p.add_argument_group(name) for name in (*_GROUPS, "run")}
    for key, setting in runspec.SETTINGS.items():
        if not setting.cli or (only is not None and key not in only):
            continue
        group = next((groups[g] for g, keys in _GROUPS.items() if key in keys), groups["run"])
        shown = setting.help_for("cli")
        if setting.default not in (None, False, True):
            shown += f" (default {setting.default})"
        if setting.env:
            shown += f"; env {setting.env}"
        help_text = argparse.SUPPRESS if key in _HIDDEN else shown
        if setting.parse is runspec.SETTINGS["dry_run"].parse:  # a boolean: a switch
            # --no-check-fields turns a default-on feature off; the others turn one on.
            value = not setting.default
            group.add_argument(setting.cli, dest=key, action="store_const", const=value, default=None, help=help_text)
        elif key == "fields":
            group.add_argument(
                setting.cli, dest=key, action="append", default=None, metavar="FIELD_ID=COLUMN", help=help_text
            )
        else:
            group.add_argument(setting.cli, dest=key, default=None, required=key in _REQUIRED, help=help_text)


def spec_from_args(args: argparse.Namespace) -> runspec.RunSpec:
    """The run the flags describe (environment and defaults applied by the RunSpec)."""
    given = {key: getattr(args, key) for key, s in runspec.SETTINGS.items() if s.cli and hasattr(args, key)}
    return runspec.resolve(given, front="cli")


_SIGNAL_EXIT = {signal.SIGINT: exit_codes.SIGINT, signal.SIGTERM: exit_codes.SIGTERM}


@contextmanager
def _stop_on_signals(circuit: Circuit) -> Iterator[list[exit_codes.ExitCode]]:
    """While the run lasts, SIGINT and SIGTERM stop it gracefully instead of killing it.

    The handler only opens the circuit (no request leaves after it); the engine waits briefly
    for the requests in flight, records what POLYV confirmed, writes the report, and the
    command exits 130/143. The yielded list receives the exit status of the first signal.
    """
    received: list[exit_codes.ExitCode] = []
    log = logging.getLogger("polyv_connector")

    def handle(signum: int, _frame: Any) -> None:
        if received:
            log.warning("already stopping (in-flight requests get a few seconds); SIGKILL stops at once")
            return
        received.append(_SIGNAL_EXIT[signal.Signals(signum)])
        log.warning(
            "%s received: stopping; requests in flight get a few seconds, then the report is written",
            signal.Signals(signum).name,
        )
        circuit.stop(f"{signal.Signals(signum).name} received")

    if threading.current_thread() is not threading.main_thread():
        yield received  # signal handlers can only be set from the main thread (main() in a thread)
        return
    previous = {sig: signal.signal(sig, handle) for sig in _SIGNAL_EXIT}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cmd_run(args: argparse.Namespace) -> int:
    from polyv_connector.engine.result import new_run_id
    from polyv_connector.errors import RunAborted
    from polyv_connector.run import Front, default_report_fallback_dir, prepare, run_page_path, sync
    from polyv_connector.sender import Circuit

    spec = spec_from_args(args)
    credentials = Credentials.from_env()
    if not spec.input_path or not spec.report_path:
        missing = "input_path" if not spec.input_path else "report_path"
        raise ConfigError(spec.label(missing), "is required")
    _check_outputs(spec, spec.input_path, spec.report_path)
    # The CLI's settings name no database: the run is a Parquet file in, a Parquet report out,
    # the folder state if any; its columns are checked before the report is started.
    front = Front(label=spec.label)
    prepared = prepare(spec, credentials, front, check_columns=True)
    run_id = new_run_id()
    circuit = Circuit()
    with _stop_on_signals(circuit) as received:
        try:
            with spec.open_budget(credentials.base_url, run_id) as budget:
                result = sync(
                    prepared.source,
                    credentials,
                    spec.options,
                    prepared.report,
                    validator=prepared.validator,
                    state=prepared.state,
                    budget=budget,
                    run_id=run_id,
                    seed=spec.seed,
                    stop=circuit,
                    report_fallback_dir=default_report_fallback_dir(),
                )
        except RunAborted as exc:
            if exc.cause != "stopped" or not received:
                raise
            # Stopped while reading the input, before anything was sent: no report.
            print(f"polyv-sync: {exc}; nothing was sent", file=sys.stderr)
            return received[0].code
    print(result.summary_line(), flush=True)
    print(f"report: {result.report_location}", flush=True)
    validation = result.extra.get("validation") or {}
    for label, key in (("validation result", "resultJson"), ("data docs", "dataDocsPage")):
        if validation.get(key):
            print(f"{label}: {validation[key]}", flush=True)
    page = _write_run_page(result, run_page_path(spec, front), spec.report_path)
    if spec.summary_json:
        summary = {**result.to_dict(), "runPage": page}
        with open(spec.summary_json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, allow_nan=False)
    if received:
        return received[0].code
    return result.exit_code


def _write_run_page(result: SyncResult, path: str, report_path: str) -> str | None:
    """Write the run page at ``path`` (next to the report: ``run.parquet`` -> ``run.html``) and
    print where; a page that cannot be written is a warning, never a failed run."""
    from polyv_connector.runpage import write_run_page

    try:
        page = write_run_page(result, path, report_path=report_path)
    except Exception as exc:
        print(f"polyv-sync: could not write the run page: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    print(f"run page: {page}", flush=True)
    return page


def _check_outputs(spec: runspec.RunSpec, input_path: str, report_path: str) -> None:
    """Every place the run writes, checked before the first request: a bad one is exit 2 now,
    not a traceback after the items were sent."""
    from polyv_connector.paths import check_output_dir, check_output_file, local_path

    check_output_file(report_path, spec.label("report_path"), input_path=input_path)
    if spec.summary_json:
        label = spec.label("summary_json")
        check_output_file(spec.summary_json, label, input_path=input_path, create_parent=False)
        if local_path(spec.summary_json) == local_path(report_path):
            raise ConfigError(label, "is the report path; give another file")
    if spec.options.state_dir:
        check_output_dir(spec.options.state_dir, spec.label("state_dir"))


def _budget_for_admin(args: argparse.Namespace) -> SharedBudget:
    """The budget the flags (or POLYV_BUDGET_URL / POLYV_API_BASE_URL) name, without joining it."""
    from polyv_connector.budget import open_budget
    from polyv_connector.config import DEFAULT_BASE_URL

    base_url = args.api_base_url or os.environ.get("POLYV_API_BASE_URL", "").strip() or DEFAULT_BASE_URL
    url = args.budget or os.environ.get("POLYV_BUDGET_URL", "").strip() or None
    return open_budget(url, api_base_url=base_url, rate=None, run_id=f"admin-{os.getpid()}", max_rps=None)


def cmd_budget_status(args: argparse.Namespace) -> int:
    budget = _budget_for_admin(args)
    try:
        print(json.dumps(budget.status(), indent=2, default=str))
    finally:
        budget.close()
    return exit_codes.OK.code


def cmd_budget_clear_block(args: argparse.Namespace) -> int:
    budget = _budget_for_admin(args)
    try:
        until = budget.blocked_until()
        budget.clear_block()
    finally:
        budget.close()
    print("no block was recorded" if until is None else "the recorded block is lifted; runs may send again")
    return exit_codes.OK.code


def _app_id(args: argparse.Namespace) -> str:
    from polyv_connector.config import check_app_id

    app_id = (args.app_id or os.environ.get("POLYV_APP_ID", "")).strip()
    if not app_id:
        raise ConfigError("--app-id", "name the account (or set POLYV_APP_ID)")
    check_app_id(app_id, "--app-id" if args.app_id else "POLYV_APP_ID")
    return app_id


def cmd_state_status(args: argparse.Namespace) -> int:
    from polyv_connector.state.admin import state_status

    print(json.dumps(state_status(args.state_dir, _app_id(args)), indent=2, default=str))
    return exit_codes.OK.code


def cmd_state_unlock(args: argparse.Namespace) -> int:
    from polyv_connector.state.admin import state_unlock

    print(state_unlock(args.state_dir, _app_id(args)))
    return exit_codes.OK.code


def _add_history_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from polyv_connector.history import run_history_command
    from polyv_connector.warehouse.db_url import DB_URL_ENV

    p = sub.add_parser(
        "history",
        help="what each run did to one viewer (run, time, field, status, reason, value as sent)",
        description="Reads a folder of Parquet reports (--reports) or a report table (--report-table "
        f"with --db-url; the URL's password, or the whole URL, may come from {DB_URL_ENV}).",
    )
    p.add_argument("--viewer-id", required=True, help="the viewer (matched exactly: never a pattern)")
    p.add_argument("--field", help="one customFieldId only")
    p.add_argument("--reports", help="a folder of Parquet reports (subfolders included)")
    p.add_argument("--report-table", help="a report table, [schema.]table")
    p.add_argument("--db-url", help=f"postgresql://, mysql:// or duckdb:/// URL of the report table (or {DB_URL_ENV})")
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.set_defaults(func=run_history_command)


def _add_admin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    budget = sub.add_parser("budget", help="the request budget shared by every run through this IP")
    budget_sub = budget.add_subparsers(dest="budget_command", required=True)
    for name, func, text in (
        ("status", cmd_budget_status, "show the rate, the runs drawing on it, and a recorded block"),
        ("clear-block", cmd_budget_clear_block, "lift a recorded POLYV block by hand (once POLYV lifted it)"),
    ):
        p = budget_sub.add_parser(name, help=text)
        p.add_argument("--budget", help="the budget's URL (default: POLYV_BUDGET_URL, else machine-wide)")
        p.add_argument("--api-base-url", help="the POLYV API whose budget it is (default: POLYV_API_BASE_URL)")
        p.set_defaults(func=func)
    state = sub.add_parser("state", help="the sync state of an account: who holds it, how large it is")
    state_sub = state.add_subparsers(dest="state_command", required=True)
    for name, func, text in (
        ("status", cmd_state_status, "who holds the state's lock (runId, host, pid, since) and its size"),
        ("unlock", cmd_state_unlock, "release a lock that outlived its holder"),
    ):
        p = state_sub.add_parser(name, help=text)
        p.add_argument("--state-dir", required=True, help="the folder given to `run --state-dir`")
        p.add_argument("--app-id", help="the account (default: POLYV_APP_ID)")
        p.set_defaults(func=func)


def _plain(text: str) -> str:
    """A docstring as a terminal shows it: reST roles (:mod:`x`) and literals (``x``) as plain text."""
    import re

    return re.sub(r":\w+:`([^`]*)`", r"\1", text).replace("``", "")


def build_parser(only_run: bool = False) -> argparse.ArgumentParser:
    """The ``polyv-sync`` parser; ``only_run``: with the ``run`` command alone (a run's start does
    not build, nor import, the other commands' parsers)."""
    doc = _plain(__doc__ or "")
    parser = argparse.ArgumentParser(
        prog="polyv-sync",
        description=doc.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc.split("\n", 1)[1].strip(),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="sync a Parquet input into POLYV viewer custom fields",
        description="Credentials come from POLYV_APP_ID and POLYV_APP_SECRET; the API "
        "base URL from POLYV_API_BASE_URL (default https://api.polyv.net).",
    )
    add_run_arguments(run)
    run.set_defaults(func=cmd_run)
    if only_run:
        return parser
    from polyv_connector.cli_plan import add_plan_commands

    add_plan_commands(sub)
    _add_admin_commands(sub)
    _add_history_command(sub)
    sim = sub.add_parser("simulator", help="run a local POLYV API simulator for rehearsals and tests")
    from polyv_connector.simulator import cli as sim_cli

    sim_cli.add_arguments(sim)
    sim.set_defaults(func=sim_cli.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code. With no ``argv`` this is the ``polyv-sync``
    program itself (its console script passes none): it then ends the process at once, see
    :func:`_end_program`."""
    if argv is None:
        lean_allocator(os.environ)
        fewer_malloc_arenas(os.environ)
    code = _run(argv)
    if argv is None:
        _end_program(code)
    return code


#: Arrow's memory pool: the C library's allocator (``system``), whose freed buffers go back
#: where Python's and the sending threads' allocations reuse them; pyarrow's default, mimalloc,
#: kept them in arenas of its own: 7-9 MB more of a 200,000-item run's peak of about 155 MB, in
#: the same time (docs/benchmarks.md). If mimalloc is chosen all the same, it commits its
#: arenas as it uses them (committed whole, 40-50 MB of the peak). Read once, when pyarrow
#: loads: the program sets them before it imports pyarrow, and a value in the environment wins.
LEAN_ALLOCATOR = {"ARROW_DEFAULT_MEMORY_POOL": "system", "MIMALLOC_ARENA_EAGER_COMMIT": "0"}

#: glibc's ``mallopt`` parameter for the number of malloc arenas (``M_ARENA_MAX``).
_M_ARENA_MAX = -8
#: Arenas the program's threads share (glibc's default: up to 8 per core, one per thread that
#: allocates): each sending thread's arena kept its own freed pages, 3-5 MB of the peak (2
#: arenas kept 1-2 MB more than one, in the same time: Python's threads allocate under the GIL).
MALLOC_ARENAS = 1


def lean_allocator(environ: MutableMapping[str, str]) -> None:
    """Default the allocator settings of :data:`LEAN_ALLOCATOR` in ``environ`` (the program's own)."""
    for name, value in LEAN_ALLOCATOR.items():
        environ.setdefault(name, value)


def fewer_malloc_arenas(environ: Mapping[str, str]) -> bool:
    """Cap glibc's malloc arenas at :data:`MALLOC_ARENAS`, unless ``MALLOC_ARENA_MAX`` is in
    ``environ`` (glibc read it at start). Returns whether the cap was set (not on a C library
    without ``mallopt``, such as musl or macOS')."""
    if "MALLOC_ARENA_MAX" in environ:
        return False
    import ctypes  # loaded already by the libraries the run imports

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, MALLOC_ARENAS))


def _end_program(code: int) -> None:
    """End the program with ``code`` without the interpreter's teardown.

    By now every file the run wrote is closed (report, page, summary, state) and every lock is
    released; what is left is Python freeing its modules, which with pyarrow and pandas loaded
    took 0.3 s after the run's last answer (issue 22, docs/benchmarks.md). Logging and the
    standard streams are flushed first; nothing else registers work for exit.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed pipe: nothing more can be said there
            stream.flush()
    os._exit(code)


def _run(argv: Sequence[str] | None) -> int:
    tokens = sys.argv[1:] if argv is None else list(argv)
    command = next((t for t in tokens if not t.startswith("-")), None)
    parser = build_parser(only_run=command == "run")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # urllib3 logs request URLs (with the signature) at DEBUG: keep it quiet even with -v.
    from polyv_connector.transport.redact import install_log_redaction

    install_log_redaction()
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("polyv-sync: interrupted; confirmed batches are kept in the state", file=sys.stderr)
        return exit_codes.SIGINT.code
    except PolyvConnectorError as exc:
        code = exit_codes.for_error(exc)
        print(f"polyv-sync: {_error_text(exc, code)}", file=sys.stderr)
        return code.code
    except Exception as exc:
        # A bug: one line for the person (70, never 1, which means "some items failed"); the
        # traceback is for whoever reruns with -v.
        logging.getLogger("polyv_connector").debug("internal error", exc_info=True)
        print(
            f"polyv-sync: internal error: {type(exc).__name__}: {_one_line(str(exc))} (rerun with -v for details)",
            file=sys.stderr,
        )
        return exit_codes.INTERNAL.code


def _one_line(text: str) -> str:
    # Defence in depth: no message of ours holds the secret, but this one comes from anywhere.
    secret = os.environ.get("POLYV_APP_SECRET", "")
    if secret:
        text = text.replace(secret, "***")
    return " ".join(text.split())[:500]


def _error_text(exc: PolyvConnectorError, code: exit_codes.ExitCode) -> str:
    """The one line a person reads: what kind of problem, the setting as typed, the cause."""
    if isinstance(exc, StateError):
        return f"state error: {exc}"
    if isinstance(exc, BusyError):
        return f"busy: {exc}"
    if isinstance(exc, ConfigError | DependencyUnavailable):
        setting = runspec.cli_error_label(exc.setting)
        kind = "configuration error" if code is exit_codes.CONFIG else "unavailable, retry later"
        return f"{kind}: {setting}: {str(exc).split(': ', 1)[-1]}"
    return str(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
