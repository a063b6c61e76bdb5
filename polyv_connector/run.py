"""A run prepared at the edge: everything the engine works with, built once, before it starts.

The CLI, the Airflow operator and :func:`sync` (the library's entry) build a run here and hand
it to the engine (:func:`polyv_connector.engine.sync.execute`), which builds nothing itself: the
POLYV client and its token bucket, the retry policy, the folder state, the folder a report
goes to when its sink fails (each front end passes its own, see :func:`default_report_fallback_dir`).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from polyv_connector.config import Credentials, SyncOptions

if TYPE_CHECKING:
    from polyv_connector.engine.plan import Source, Validator
    from polyv_connector.engine.result import SyncResult
    from polyv_connector.engine.sync import Run
    from polyv_connector.progress import Progress
    from polyv_connector.report import ReportSink
    from polyv_connector.sender import Circuit
    from polyv_connector.state.store import StateStore
    from polyv_connector.transport.client import PolyvClient
    from polyv_connector.transport.ratelimit import RequestBudget


def default_report_fallback_dir() -> Path:
    """Where a report goes when its sink fails, as the CLI, the operator and :func:`sync` had it:
    ``$AIRFLOW_HOME/polyv_reports``, else ``polyv_reports`` in the temp directory."""
    home = os.environ.get("AIRFLOW_HOME", "").strip()
    return Path(home or tempfile.gettempdir()) / "polyv_reports"


def assemble(
    source: Source,
    credentials: Credentials,
    options: SyncOptions,
    report: ReportSink | None,
    *,
    validator: Validator | None = None,
    state: StateStore | None = None,
    client: PolyvClient,
    report_fallback_dir: str | os.PathLike[str],
) -> Run:
    """The engine's :class:`~polyv_connector.engine.sync.Run`: the folder state made from
    ``options.state_dir`` when no ``state`` is given, the retry policy from the send options."""
    from polyv_connector.engine.sync import Run
    from polyv_connector.transport.retry import RetryPolicy

    if state is None and options.state_dir:
        from polyv_connector.state.folder import SyncState

        state = SyncState(options.state_dir, credentials.app_id, implicit_lock=False)
    return Run(
        source=source,
        app_id=credentials.app_id,
        options=options,
        report=report,
        client=client,
        retry=RetryPolicy.of(options.send),
        report_fallback_dir=Path(report_fallback_dir),
        validator=validator,
        state=state,
    )


def new_client(
    credentials: Credentials, options: SyncOptions, budget: RequestBudget | None, clock: Callable[[], float]
) -> PolyvClient:
    """A POLYV client of its own for the run, drawing on ``budget`` (default: a token bucket at ``max_rps``)."""
    from polyv_connector.transport.client import PolyvClient
    from polyv_connector.transport.ratelimit import TokenBucket

    return PolyvClient(credentials, options.send, budget=budget or TokenBucket(options.send.max_rps), clock=clock)


def sync(
    source: Source,
    credentials: Credentials,
    options: SyncOptions,
    report: ReportSink | None,
    *,
    validator: Validator | None = None,
    state: StateStore | None = None,
    budget: RequestBudget | None = None,
    progress: Progress | None = None,
    run_id: str | None = None,
    client: PolyvClient | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    seed: int | None = None,
    stop: Circuit | None = None,
    report_fallback_dir: str | os.PathLike[str] | None = None,
) -> SyncResult:
    """Run one sync and write its report. Returns the result; never raises for row problems.

    ``state`` keeps confirmed fingerprints between runs (default: a folder state under
    ``options.state_dir``, or none). Raises :class:`ConfigError`/:class:`InputError` (before
    any save request) for bad settings or input, and :class:`StateError` for an
    untrustworthy state. ``client`` is the POLYV client to use (e.g. an Airflow hook's); by
    default the run makes its own and closes it. Whatever the run raises, the report it had
    started is dropped (``report.abort()``): a partial report never stands. A run that POLYV refuses
    (credentials, clock, IP block) or that a gate stops still writes its report and returns a
    result whose ``aborted`` / ``gate_failures`` say why (``exit_code`` non-zero).

    ``stop`` lets another thread or a signal handler stop the run (:meth:`Circuit.stop`): no
    new request leaves, requests in flight get a few seconds to answer (the rest are reported
    ``in_doubt``), the report is written and the result says ``aborted`` with cause
    ``stopped``. An exception raised while sending (``KeyboardInterrupt``, Airflow's task
    timeout) is treated the same way, then re-raised once the report is written;
    :func:`~polyv_connector.engine.result.interrupted_result` gives the result it carries.

    When ``report`` cannot be written (a warehouse error at write or commit), the whole report
    goes to a Parquet file under ``report_fallback_dir`` (default: :func:`default_report_fallback_dir`)
    and the result names it (``reportFallback``).
    """
    from polyv_connector.engine.context import RunContext
    from polyv_connector.engine.result import new_run_id
    from polyv_connector.engine.sync import execute
    from polyv_connector.progress import Progress
    from polyv_connector.sender import Circuit

    own_client = client is None
    try:
        options.validate()
        credentials.validate()
        ctx = RunContext(
            run_id=run_id or new_run_id(clock),
            clock=clock,
            sleep=sleep,
            seed=seed,
            stop=stop if stop is not None else Circuit(),
            progress=progress or Progress(),
        )
        if client is None:
            client = new_client(credentials, options, budget, clock)
        run = assemble(
            source,
            credentials,
            options,
            report,
            validator=validator,
            state=state,
            client=client,
            report_fallback_dir=(
                report_fallback_dir if report_fallback_dir is not None else default_report_fallback_dir()
            ),
        )
    except BaseException:
        # As the engine does for whatever a run raises: no partial report stands.
        if report is not None:
            report.abort()
        if own_client and client is not None:
            client.close()
        raise
    try:
        return execute(run, ctx)
    finally:
        if own_client:
            client.close()
