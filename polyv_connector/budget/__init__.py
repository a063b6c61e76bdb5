"""One request budget per egress IP, shared by every sync that leaves through it.

>>> with open_budget(None, api_base_url="https://api.polyv.net", rate=None,
...                  run_id="sync-42", max_rps=None) as budget:  # doctest: +SKIP
...     budget.acquire()        # blocks until one request may go; BudgetBlocked if the IP is blocked
...     budget.record_block()   # after POLYV answered "qps exceeds number of calls" / 429

See docs/budget.md for the design.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from urllib.parse import urlsplit

from polyv_connector.budget.base import (
    BLOCK_SECONDS_ENV,
    DEFAULT_BLOCK_S,
    BudgetBlocked,
    BudgetStore,
    BudgetTimeout,
    RunInfo,
    SharedBudget,
    fair_shares,
)
from polyv_connector.budget.machine import DB_NAME, RUNTIME_DIR_ENV, MachineStore, default_runtime_dir, prepare_dir
from polyv_connector.errors import ConfigError
from polyv_connector.model import DEFAULT_BUDGET_RPS, MAX_RPS_CEILING

__all__ = [
    "BLOCK_SECONDS_ENV",
    "DEFAULT_BLOCK_S",
    "DEFAULT_RATE",
    "MAX_RATE",
    "RUNTIME_DIR_ENV",
    "BudgetBlocked",
    "BudgetTimeout",
    "RunInfo",
    "SharedBudget",
    "api_host_key",
    "fair_shares",
    "open_budget",
    "open_store",
]

#: Requests per second for the whole IP when none is configured.
DEFAULT_RATE = DEFAULT_BUDGET_RPS
#: The most a budget may allow: 1400 per 10 s leaves POLYV's 1500 some headroom.
MAX_RATE = MAX_RPS_CEILING


def api_host_key(api_base_url: str, setting: str = "api_base_url") -> str:
    """``host:port`` of the POLYV API base URL: budgets of different API hosts never mix."""
    try:
        parts = urlsplit(api_base_url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(setting, f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(setting, f"expected http(s)://host[:port], got {api_base_url!r}")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port or (443 if parts.scheme == 'https' else 80)}"


def check_rate(rate: float | None, setting: str) -> float:
    """The budget's rate: ``rate`` or 100/s; ConfigError naming ``setting`` unless 0 < rate <= 140."""
    if rate is None:
        return DEFAULT_RATE
    value = float(rate)
    if not math.isfinite(value) or value <= 0 or value > MAX_RATE:
        raise ConfigError(
            setting,
            f"must be more than 0 and at most {MAX_RATE:g} requests/s for the whole IP (POLYV blocks an IP "
            f"past 1500 requests per 10 s), got {rate!r}",
        )
    return value


def open_store(url: str | None, *, host_key: str, setting_url: str = "--budget") -> BudgetStore:
    """The store at ``url``; raises before anything is sent when it is unusable.

    ``None`` or ``""``: machine-wide SQLite in ``$POLYV_RUNTIME_DIR`` or ``/tmp/polyv-connector-<uid>``;
    ``file:///dir``: machine-wide in that directory; ``sqlite:///path/to/file.sqlite3``: that database;
    ``redis://[:password@]host:port/db`` (or ``rediss://``): shared across hosts.
    """
    if not url:
        directory = default_runtime_dir()
        prepare_dir(directory, setting_url, private=not _runtime_dir_configured())
        return MachineStore(directory / DB_NAME, host_key, setting_url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (validates the port)
    except ValueError:
        raise ConfigError(
            setting_url, "not a valid URL (expected redis://host:port/db, file:///dir or sqlite:///file)"
        ) from None
    if parts.scheme in ("redis", "rediss"):
        try:
            from polyv_connector.budget.redis import RedisStore
        except ImportError:  # the optional dependency: pip install 'polyv-connector[redis]'
            raise ConfigError(
                setting_url, "a Redis budget needs the redis package: pip install 'polyv-connector[redis]'"
            ) from None
        return RedisStore(parts, host_key, setting_url)
    if parts.scheme in ("file", "sqlite") and parts.path and not parts.netloc and not parts.query:
        path = Path(parts.path)
        if parts.scheme == "file":
            prepare_dir(path, setting_url, private=False)
            return MachineStore(path / DB_NAME, host_key, setting_url)
        prepare_dir(path.parent, setting_url, private=False)
        return MachineStore(path, host_key, setting_url)
    scheme = parts.scheme or "no scheme"
    raise ConfigError(
        setting_url, f"unsupported budget URL ({scheme}); expected redis://host:port/db, file:///dir or sqlite:///file"
    )


def _runtime_dir_configured() -> bool:
    return bool(os.environ.get(RUNTIME_DIR_ENV))


def open_budget(
    url: str | None,
    *,
    api_base_url: str,
    rate: float | None,
    run_id: str,
    max_rps: float | None,
    setting_url: str = "--budget",
    setting_rate: str = "--budget-rps",
    setting_max_rps: str = "--max-rps",
) -> SharedBudget:
    """Open the shared request budget of ``api_base_url``'s host at ``url`` for the run ``run_id``.

    Checks everything first: ConfigError (exit 2) for a bad URL, directory or rate,
    DependencyUnavailable (exit 75) for an unreachable Redis. The run joins the budget on its
    first save's ``acquire()`` (or ``register()``), not on ``with``; ``leave()`` and ``close()``
    leave it.
    ``run_id`` must be unique among concurrent runs (two runs with one id share one share).
    """
    checked_rate = check_rate(rate, setting_rate)
    if max_rps is not None and (not math.isfinite(max_rps) or max_rps <= 0):
        raise ConfigError(setting_max_rps, f"must be more than 0, got {max_rps!r}")
    if not run_id:
        raise ConfigError("run_id", "must not be empty")
    host_key = api_host_key(api_base_url)
    store = open_store(url, host_key=host_key, setting_url=setting_url)
    return SharedBudget(store, host_key=host_key, rate=checked_rate, run_id=run_id, max_rps=max_rps)
