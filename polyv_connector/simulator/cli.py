"""Simulator command line: ``polyv-sync simulator`` and ``python -m polyv_connector.simulator``.

The appSecret comes from the environment (``POLYV_APP_SECRET``), never from an argument, so it
does not show in the process list or shell history; it is never printed either.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from polyv_connector.simulator.config import DEFAULT_FIELDS, FaultConfig, RateLimitConfig

if TYPE_CHECKING:  # the server (http.server, its handler) is imported when a simulator is built:
    # every `polyv-sync` command builds this parser, and a run must not pay for it (issue 22)
    from polyv_connector.simulator.server import PolyvSimulator

DEFAULT_PORT = 8750
DEFAULT_APP_ID = "demo-app"
DEFAULT_APP_SECRET = "demo-secret"  # the public demo credential
_DEFAULT_LIMIT = RateLimitConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to ``parser`` (a subcommand parser or a standalone one)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port, 0 for any free (default %(default)s)")
    parser.add_argument(
        "--app-id",
        default=None,
        help=f"appId to accept (default: $POLYV_APP_ID or {DEFAULT_APP_ID}); its secret is "
        "read from $POLYV_APP_SECRET (default: the demo secret)",
    )
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="APPID:SECRET",
        type=parse_account,
        help="an account to accept, repeatable (several accounts at once, like one IP syncing several "
        "POLYV accounts); shows in the process list, so test credentials only. With --account, "
        "--app-id adds one more account",
    )
    parser.add_argument(
        "--fields",
        default=",".join(DEFAULT_FIELDS),
        help="comma-separated customFieldIds (default %(default)s)",
    )
    faults = parser.add_argument_group("injected faults (rates and --hang-s: save requests only)")
    faults.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 500")
    faults.add_argument(
        "--gateway-error-rate",
        type=float,
        default=0.0,
        help="fraction answered 502 (HTML)",
    )
    faults.add_argument(
        "--clock-offset",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="shift the simulator's clock (timestamp check and Date header) by SECONDS, e.g. -300",
    )
    faults.add_argument(
        "--reset-rate",
        type=float,
        default=0.0,
        help="fraction whose connection is reset",
    )
    faults.add_argument(
        "--html-rate",
        type=float,
        default=0.0,
        help="fraction answered 200 with an HTML page",
    )
    faults.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="delay before every API answer",
    )
    faults.add_argument(
        "--hang-s",
        type=float,
        default=0.0,
        help="delay before every save answer (timeouts)",
    )
    faults.add_argument(
        "--poison-value",
        action="append",
        default=[],
        metavar="VALUE",
        help="a customFieldValue that makes its whole batch fail with 400 (repeatable)",
    )
    faults.add_argument("--seed", type=int, default=None, help="seed of the fault draws")
    limit = parser.add_argument_group("rate limit (per client IP, both endpoints)")
    limit.add_argument(
        "--max-requests",
        type=int,
        default=_DEFAULT_LIMIT.max_requests,
        help="requests allowed per window (default %(default)s)",
    )
    limit.add_argument(
        "--window-s",
        type=float,
        default=_DEFAULT_LIMIT.window_s,
        help="sliding window in seconds (default %(default)s)",
    )
    limit.add_argument(
        "--block-s",
        type=float,
        default=_DEFAULT_LIMIT.block_s,
        help="block length in seconds once exceeded (default %(default)s)",
    )
    limit.add_argument(
        "--block-status",
        type=int,
        default=_DEFAULT_LIMIT.block_http_status,
        help="HTTP status of a block (default %(default)s; POLYV does not document it)",
    )
    parser.add_argument(
        "--max-items",
        type=int,
        default=1000,
        help="objects per save request (default %(default)s)",
    )


def build_simulator(args: argparse.Namespace) -> PolyvSimulator:
    from polyv_connector.simulator.server import PolyvSimulator

    """Build (not start) the simulator described by parsed ``args``."""
    secret = os.environ.get("POLYV_APP_SECRET") or DEFAULT_APP_SECRET
    faults = FaultConfig(
        error_rate=args.error_rate,
        gateway_error_rate=args.gateway_error_rate,
        reset_rate=args.reset_rate,
        html_rate=args.html_rate,
        latency_s=args.latency_ms / 1000.0,
        hang_s=args.hang_s,
        poison_values=tuple(args.poison_value),
        seed=args.seed,
    )
    rate_limit = RateLimitConfig(
        max_requests=args.max_requests,
        window_s=args.window_s,
        block_s=args.block_s,
        block_http_status=args.block_status,
    )
    return PolyvSimulator(
        apps=resolve_accounts(args, secret),
        fields=parse_fields(args.fields),
        host=args.host,
        port=args.port,
        faults=faults,
        rate_limit=rate_limit,
        max_items=args.max_items,
        clock_offset_s=args.clock_offset,
        record_batches=False,  # nobody reads them from a CLI run; they would only grow
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; return the process exit status (0, or 2 on bad setup)."""
    try:
        sim = build_simulator(args)
        sim.start()
    except (ValueError, OSError) as exc:
        print(f"polyv simulator: {exc}", file=sys.stderr, flush=True)
        return 2
    app_ids, fields = ",".join(sim.accounts), ",".join(sim.fields)
    label = "appIds" if len(sim.accounts) > 1 else "appId"
    print(f"POLYV simulator listening on {sim.base_url} ({label}={app_ids}, fields={fields})")
    sys.stdout.flush()  # a parent process waits for this line to know the port
    try:
        _wait_for_signal()
    finally:
        sim.stop()
    return 0


def resolve_app_id(args: argparse.Namespace) -> str:
    """The appId the CLI simulator accepts: ``--app-id``, else ``$POLYV_APP_ID``, else demo."""
    return args.app_id or os.environ.get("POLYV_APP_ID") or DEFAULT_APP_ID


def parse_account(text: str) -> tuple[str, str]:
    """``appId:secret`` (the secret may contain colons) -> ``(appId, secret)``."""
    app_id, sep, secret = text.partition(":")
    if not sep or not app_id.strip() or not secret:
        # The secret is not echoed back: only the appId part, if any.
        raise argparse.ArgumentTypeError(f"expected APPID:SECRET (appId {app_id.strip()!r})")
    return app_id.strip(), secret


def resolve_accounts(args: argparse.Namespace, secret: str) -> dict[str, str]:
    """appId -> secret: every ``--account``; else (or also, with ``--app-id``) the single account."""
    accounts = dict(getattr(args, "account", None) or [])
    if not accounts or args.app_id:
        accounts.setdefault(resolve_app_id(args), secret)
    return accounts


def parse_fields(text: str) -> list[str]:
    """Split a comma-separated ``--fields`` value, dropping blanks."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _wait_for_signal() -> None:
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Off the main thread signal.signal() raises ValueError; the caller must stop us then.
        with contextlib.suppress(ValueError):
            previous[signum] = signal.signal(signum, _on_signal)
    try:
        # Short waits so the Python-level signal handler gets to run promptly.
        while not stop.wait(0.2):
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m polyv_connector.simulator``."""
    parser = argparse.ArgumentParser(
        prog="python -m polyv_connector.simulator",
        description="Run a local simulator of POLYV's viewer custom-field API.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
