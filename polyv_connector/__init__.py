"""polyv-connector: sync viewer attributes into POLYV viewer custom fields.

The public face: :func:`sign` (the signature rule), :func:`sync` (one run), and the
configuration types. Heavy modules (pyarrow, pandas) load only when ``sync`` is used, so
importing this package is cheap at Airflow DAG-parse time.
"""

from __future__ import annotations

from typing import Any

from polyv_connector.config import ColumnMapping, Credentials, Secret, SendOptions, SyncOptions
from polyv_connector.errors import (
    BusyError,
    ConfigError,
    DependencyUnavailable,
    InputError,
    PolyvConnectorError,
    RunAborted,
    StateError,
)
from polyv_connector.signing import sign

__all__ = [
    "BusyError",
    "ColumnMapping",
    "ConfigError",
    "Credentials",
    "DependencyUnavailable",
    "InputError",
    "PolyvConnectorError",
    "RunAborted",
    "Secret",
    "SendOptions",
    "StateError",
    "SyncOptions",
    "SyncResult",
    "sign",
    "sync",
]


def __getattr__(name: str) -> Any:
    if name == "sync":
        from polyv_connector.run import sync

        return sync
    if name == "SyncResult":
        from polyv_connector.engine.result import SyncResult

        return SyncResult
    raise AttributeError(name)
