"""Typed, validated settings for one sync run. Nothing here does I/O."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from polyv_connector.errors import ConfigError
from polyv_connector.model import (
    DEFAULT_BUDGET_RPS,
    FIELD_ID,
    MAX_BATCH_SIZE,
    MAX_FIELD_ID_LENGTH,
    MAX_RPS_CEILING,
    VALUE,
    VIEWER_ID,
)
from polyv_connector.partitioning import Slice
from polyv_connector.report_rows import DEFAULT_REPORT_ROWS, ReportRows, check_report_rows

DEFAULT_BASE_URL = "https://api.polyv.net"
#: The longest appId accepted (POLYV's are about ten characters).
MAX_APP_ID_LENGTH = 64


def check_app_id(app_id: str, setting: str) -> None:
    """Refuse an appId that could act as a path (it names the state folder) or is not text.

    The message never quotes the value: a mangled variable may hold the secret.
    """
    if not app_id:
        raise ConfigError(setting, "the POLYV appId is not set")
    if not 1 <= len(app_id) <= MAX_APP_ID_LENGTH or not all(" " < c <= "~" for c in app_id):
        raise ConfigError(setting, f"the appId must be 1-{MAX_APP_ID_LENGTH} printable ASCII characters without spaces")
    if "/" in app_id or "\\" in app_id or ".." in app_id or app_id == ".":
        raise ConfigError(setting, "the appId must not contain '/', '\\' or '..'")


class Secret:
    """Holds the appSecret so that printing, logging or repr-ing a config cannot leak it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: call only where a signature is computed."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would copy the secret into task results or caches: refuse.
        raise TypeError("Secret cannot be pickled")


@dataclass(frozen=True)
class Credentials:
    """POLYV account credentials and the API base URL."""

    app_id: str
    app_secret: Secret
    base_url: str = DEFAULT_BASE_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        """Read ``POLYV_APP_ID``, ``POLYV_APP_SECRET`` and ``POLYV_API_BASE_URL``."""
        env = os.environ if env is None else env
        creds = cls(
            app_id=env.get("POLYV_APP_ID", "").strip(),
            app_secret=Secret(env.get("POLYV_APP_SECRET", "")),
            base_url=env.get("POLYV_API_BASE_URL", "").strip() or DEFAULT_BASE_URL,
        )
        creds.validate(
            app_id_setting="POLYV_APP_ID", secret_setting="POLYV_APP_SECRET", url_setting="POLYV_API_BASE_URL"
        )
        return creds

    def validate(
        self,
        app_id_setting: str = "app_id",
        secret_setting: str = "app_secret",
        url_setting: str = "base_url",
    ) -> None:
        """Fail with a :class:`ConfigError` naming the setting that is wrong."""
        # First: the appId names a folder of the sync state, and errors below must not depend
        # on anything that could reveal the secret.
        check_app_id(self.app_id, app_id_setting)
        if not self.app_secret:
            raise ConfigError(secret_setting, "the POLYV appSecret is not set")
        try:
            self.app_secret.reveal().encode("utf-8")
        except UnicodeEncodeError:
            # Say nothing about the secret's content: not even which character is wrong.
            raise ConfigError(secret_setting, "the appSecret is not valid text (check how it is stored)") from None
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(url_setting, f"must start with http:// or https://, got {self.base_url!r}")


@dataclass(frozen=True)
class ColumnMapping:
    """How source columns become (viewerId, customFieldId, customFieldValue) items.

    Long form (default): one item per row from three columns. Wide form: ``fields`` maps
    each customFieldId to a column, and every row yields one item per mapped field.
    """

    viewer_id_column: str = VIEWER_ID
    field_id_column: str = FIELD_ID
    value_column: str = VALUE
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def is_wide(self) -> bool:
        return bool(self.fields)

    @property
    def source_columns(self) -> list[str]:
        """The columns to read from the source, in a stable order."""
        if self.is_wide:
            cols = [self.viewer_id_column] + [col for _, col in self.fields]
        else:
            cols = [self.viewer_id_column, self.field_id_column, self.value_column]
        return list(dict.fromkeys(cols))

    @classmethod
    def wide(cls, viewer_id_column: str, fields: Mapping[str, str]) -> ColumnMapping:
        """Wide form: ``fields`` maps customFieldId -> source column."""
        return cls(viewer_id_column=viewer_id_column, fields=tuple(fields.items()))

    def validate(self) -> None:
        for field_id, column in self.fields:
            if not field_id or not column:
                raise ConfigError("--field", "expected FIELD_ID=COLUMN with both parts non-empty")
            if len(field_id) > MAX_FIELD_ID_LENGTH:
                raise ConfigError("--field", f"customFieldId {field_id!r} is longer than 64")
        if len({f for f, _ in self.fields}) != len(self.fields):
            raise ConfigError("--field", "the same customFieldId is mapped twice")


@dataclass(frozen=True)
class SendOptions:
    """How requests are sent. Defaults follow POLYV's documented limits with headroom."""

    batch_size: int = MAX_BATCH_SIZE
    concurrency: int = 8
    max_rps: float = DEFAULT_BUDGET_RPS
    max_attempts: int = 5
    timeout_s: float = 30.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    signature_method: Literal["MD5", "SHA256"] = "MD5"

    def validate(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ConfigError("batch_size", f"must be between 1 and {MAX_BATCH_SIZE}, got {self.batch_size}")
        if not 1 <= self.concurrency <= 64:
            raise ConfigError("concurrency", f"must be between 1 and 64, got {self.concurrency}")
        # POLYV blocks an IP for 5 minutes past 1500 requests / 10 s: never allow a cap at it.
        if not (0 < self.max_rps <= MAX_RPS_CEILING) or math.isnan(self.max_rps):
            raise ConfigError(
                "max_rps",
                f"must be > 0 and <= {MAX_RPS_CEILING:g} (POLYV blocks the IP past 150/s), got {self.max_rps}",
            )
        if not 1 <= self.max_attempts <= 20:
            raise ConfigError("max_attempts", f"must be between 1 and 20, got {self.max_attempts}")
        if not (0 <= self.backoff_base_s <= self.backoff_max_s <= 600):
            raise ConfigError("backoff", "need 0 <= backoff_base_s <= backoff_max_s <= 600 seconds")
        if not self.timeout_s > 0:
            raise ConfigError("timeout", f"must be > 0 seconds, got {self.timeout_s}")
        if self.signature_method not in ("MD5", "SHA256"):
            raise ConfigError("signature_method", "must be MD5 or SHA256")


@dataclass(frozen=True)
class SyncOptions:
    """Everything about one run except where the rows come from."""

    send: SendOptions = field(default_factory=SendOptions)
    mapping: ColumnMapping = field(default_factory=ColumnMapping)
    dry_run: bool = False
    full_refresh: bool = False
    check_fields: bool = True  # preflight GET custom-field/list, reject unknown ids
    state_dir: str | None = None
    reset_corrupt_state: bool = False
    max_rejected_fraction: float | None = None
    expectations_path: str | None = None
    read_batch_rows: int = 65_536
    lock_timeout_s: float = 0.0  # how long to wait for another run to release the sync state
    # This run handles slice ``partition`` of ``partitions`` (see polyv_connector.partitioning);
    # partitions == 1 is the whole account.
    partitions: int = 1
    partition: int = 0
    # The Airflow DAG run that started this sync, recorded in the report (None outside Airflow).
    airflow_run_id: str | None = None
    # Which report rows are written: every item's ("all") or all but the unchanged ("changes").
    report_rows: ReportRows = DEFAULT_REPORT_ROWS
    # Change limits (polyv_connector.engine.changes): None switches a check off.
    max_changed_fraction: float | None = 0.5
    change_limit_min_items: int = 1000
    max_source_shrink: float | None = 0.5
    # The run reads the account's (slice's) whole source: shrink check, removed, baseline.
    whole_source: bool = False
    # What a NULL value means: "reject" the item, or "clear" (send an empty value).
    null_values: str = "reject"
    # The items are a plan's, diffed and approved (``polyv-sync apply``): none is left out as
    # unchanged and no change limit is checked; set by the edge, never a user setting.
    planned: bool = False

    def validate(self) -> None:
        self.send.validate()
        self.mapping.validate()
        if self.max_rejected_fraction is not None and not 0 <= self.max_rejected_fraction <= 1:
            raise ConfigError("max_rejected_fraction", "must be between 0 and 1")
        if self.read_batch_rows < 1:
            raise ConfigError("read_batch_rows", "must be >= 1")
        limit = self.max_changed_fraction
        if limit is not None and (not math.isfinite(limit) or limit < 0):
            raise ConfigError("max_changed_fraction", f"must be a number of at least 0, or none; got {limit}")
        if self.change_limit_min_items < 0:
            raise ConfigError("change_limit_min_items", f"must be at least 0, got {self.change_limit_min_items}")
        shrink = self.max_source_shrink
        if shrink is not None and not 0 <= shrink <= 1:
            raise ConfigError("max_source_shrink", f"must be between 0 and 1, or none; got {shrink}")
        if self.null_values not in ("reject", "clear"):
            raise ConfigError("null_values", f"must be reject or clear, got {self.null_values!r}")
        if not 0 <= self.lock_timeout_s <= 86_400 or math.isnan(self.lock_timeout_s):
            raise ConfigError("lock_timeout", f"must be between 0 and 86400 seconds, got {self.lock_timeout_s}")
        check_report_rows(self.report_rows)
        self.slice.validate()

    @property
    def slice(self) -> Slice:
        """The part of the account this run handles (``Slice(0, 1)``: all of it)."""
        return Slice(self.partition, self.partitions)
