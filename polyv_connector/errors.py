"""Errors, typed by what the caller should do about them.

* :class:`ConfigError` — fix a setting; raised before any request is sent.
* :class:`InputError` — fix the input data or its location; also raised before sending.
* :class:`StateError` — the sync state cannot be trusted; nothing was sent.
* :class:`BusyError` — another run holds the sync state; retry later.
* :class:`DependencyUnavailable` — a warehouse, Redis or budget store is down; retry later.
* :class:`RunAborted` — POLYV refused the run as a whole (credentials, clock, IP block);
  the report is written first, with every unsent row ``not_attempted``.

No message here ever contains the appSecret or a signed URL.
"""

from __future__ import annotations


class PolyvConnectorError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(PolyvConnectorError):
    """A setting is missing or invalid. ``setting`` names it as the user wrote it."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class InputError(ConfigError):
    """The input cannot be read, or lacks a column the mapping needs."""


class StateError(PolyvConnectorError):
    """The sync state is missing, corrupt or belongs to another account."""


class BusyError(PolyvConnectorError):
    """Another run holds the lock on this sync state; nothing was sent (exit 5, retry later).

    ``holder`` describes the run holding it (runId, host, pid, since) when known.
    """

    def __init__(self, message: str, *, holder: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.holder = holder or {}


class DependencyUnavailable(PolyvConnectorError):
    """A service the run needs (warehouse, Redis, budget store) cannot be reached now (exit 75).

    ``setting`` names the setting that points at it, as the user wrote it.
    """

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class RunAborted(PolyvConnectorError):
    """POLYV answered in a way that makes every further request pointless or harmful.

    ``cause`` is one of ``auth`` (invalid signature, unknown appId), ``clock`` (invalid
    timestamp: the local clock is off by more than three minutes) or ``blocked`` (the
    client IP hit POLYV's rate limit and is blocked for five minutes).
    """

    def __init__(
        self,
        cause: str,
        message: str,
        *,
        http_status: int | None = None,
        error_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.cause = cause
        self.http_status = http_status
        self.error_code = error_code
        self.request_id = request_id
