"""``PolyvHook``: the ``polyv`` Airflow connection turned into the engine's credentials and client.

Connection fields: login = appId, password = appSecret, host = API base URL (optional, default
``https://api.polyv.net``). Extras hold per-account sending defaults: ``max_rps``,
``batch_size``, ``concurrency``, ``timeout``. The secret is registered with Airflow's secret
masker the moment the connection is read, before anything could log it.

The other connections a run uses are resolved here too: :func:`db_hook` (a SQL source, report
or state table: any common-sql ``DbApiHook``), :func:`same_database` and :func:`redis_url` (the
shared request budget).

Importing this module is cheap (no pyarrow, pandas or requests): the operator module imports
it, and DAG files import the operator at parse time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from polyv_connector.config import DEFAULT_BASE_URL, Credentials, Secret, SendOptions
from polyv_connector.errors import ConfigError, PolyvConnectorError

if TYPE_CHECKING:
    from polyv_connector.airflow.folders import Writer
    from polyv_connector.run import Front
    from polyv_connector.runspec import RunSpec
    from polyv_connector.transport.client import PolyvClient
    from polyv_connector.transport.ratelimit import RequestBudget


class PolyvHook(BaseHook):
    """Owns the ``polyv`` connection: credentials, sending defaults, and one pooled client.

    :param polyv_conn_id: the Airflow connection id (default ``polyv_default``).
    """

    conn_name_attr = "polyv_conn_id"
    default_conn_name = "polyv_default"
    conn_type = "polyv"
    hook_name = "POLYV"

    def __init__(self, polyv_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.polyv_conn_id = polyv_conn_id
        self._client: PolyvClient | None = None

    @cached_property
    def _connection_fields(self) -> tuple[Credentials, dict[str, Any]]:
        conn = self.get_connection(self.polyv_conn_id)
        secret = conn.password or ""
        # Before anything else touches the connection: from here on the masker redacts the
        # secret in every task log line, including exception texts.
        if secret:
            mask_secret(secret)
        base_url = _base_url(conn.host, conn.port)
        credentials = Credentials(
            app_id=(conn.login or "").strip(), app_secret=Secret(secret), base_url=base_url.rstrip("/")
        )
        return credentials, dict(conn.extra_dejson or {})

    def get_credentials(self) -> Credentials:
        """The appId, secret and base URL; raises :class:`ConfigError` naming the connection field."""
        credentials = self._connection_fields[0]
        where = f"connection {self.polyv_conn_id!r}"
        credentials.validate(
            app_id_setting=f"{where}: login (appId)",
            secret_setting=f"{where}: password (appSecret)",
            url_setting=f"{where}: host (API base URL)",
        )
        return credentials

    def resolve_run(self, given: Mapping[str, Any]) -> RunSpec:
        """The run described by an operator's ``given`` arguments over this connection's extras.

        Precedence: the argument, then the connection's extra, then the environment, then the
        default (:mod:`polyv_connector.runspec`). Errors name the argument or the extra.
        """
        from polyv_connector import runspec

        return runspec.resolve(
            given,
            front="operator",
            extras=self._connection_fields[1],
            extras_label=f"connection {self.polyv_conn_id!r}",
        )

    def get_send_options(self, **overrides: Any) -> SendOptions:
        """Sending settings: library defaults < environment < connection extras < non-None ``overrides``.

        ``overrides`` are operator argument names (``max_rps``, ``batch_size``, ``concurrency``,
        ``timeout``, ``max_attempts``, ...).
        """
        return self.resolve_run(overrides).options.send

    def get_conn(self, options: SendOptions | None = None, budget: RequestBudget | None = None) -> PolyvClient:
        """The engine's client for this connection: one pooled HTTP session, reused by the task.

        ``options`` are the run's sending settings (default: the connection's); ``budget`` the
        request budget every call draws on (default: a token bucket at the options' max_rps).
        """
        if self._client is None:
            from polyv_connector.run import new_client

            self._client = new_client(self.get_credentials(), options or self.get_send_options(), budget)
        return self._client

    def close(self) -> None:
        """Close the pooled session (idempotent)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def test_connection(self) -> tuple[bool, str]:
        """Sign one call to the custom-field list. Returns ``(ok, message)``; never the secret.

        The message is also printed: ``airflow connections test`` shows only "Connection
        success!" on success, so that line is where the CLI user sees what was reached.
        """
        ok, message = self._test_connection()
        # Printed, not logged: `airflow connections test` shows only "Connection success!" on
        # success, and its logging is configured to drop INFO records, so a log line never
        # reaches the CLI user. (The API server's Test button shows the returned message.)
        print(f"POLYV connection test: {message}", flush=True)
        return ok, message

    def _test_connection(self) -> tuple[bool, str]:
        from polyv_connector.transport.retry import RetryPolicy

        try:
            credentials = self.get_credentials()
            spec = self.resolve_run({})
            # The test's requests come out of the IP's shared budget like any sync's, and a block
            # recorded there stops it before it sends anything.
            with spec.open_budget(credentials.base_url, f"connection-test-{os.getpid()}") as budget:
                client = self.get_conn(spec.options.send, budget)
                # Few quick tries: a connection test should answer in seconds, not back off for minutes.
                fields = client.list_fields(retry=RetryPolicy(2, 0.5, 1.0))
        except PolyvConnectorError as exc:
            return False, _scrub(str(exc), self)
        except Exception as exc:  # the UI shows the message: never let a traceback through
            return False, _scrub(f"{type(exc).__name__}: {exc}", self)
        finally:
            self.close()
        return True, (
            f"Connected to {credentials.base_url} as appId {credentials.app_id}: {len(fields)} custom field(s)"
        )


# ---- the other connections a run uses ------------------------------------------------------------
def db_hook(conn_id: str, setting: str) -> Any:
    """The common-sql hook of ``conn_id`` (anything exposing DB-API ``get_conn``)."""
    try:
        hook = BaseHook.get_hook(conn_id)
    except Exception as exc:
        raise ConfigError(setting, f"cannot use connection {conn_id!r}: {type(exc).__name__}: {exc}") from exc
    if not callable(getattr(hook, "get_conn", None)) or not hasattr(hook, "placeholder"):
        raise ConfigError(
            setting,
            f"connection {conn_id!r} ({type(hook).__name__}) is not a SQL database connection (a common-sql DbApiHook)",
        )
    return hook


def same_database(conn_a: str | None, conn_b: str | None) -> bool:
    """Whether two connections reach the same database (perhaps as different roles): the diff in
    the warehouse reads the state table through the source connection, and writes it through
    the state connection, so both must see the same table."""
    if not conn_a or not conn_b:
        return False
    if conn_a == conn_b:
        return True
    try:
        a, b = BaseHook.get_connection(conn_a), BaseHook.get_connection(conn_b)
    except Exception as exc:
        raise ConfigError("state_conn_id", f"cannot use connection: {type(exc).__name__}") from exc

    def where(conn: Any) -> tuple[Any, ...]:
        return (conn.conn_type, (conn.host or "").lower(), conn.port, conn.schema)

    return where(a) == where(b)


def redis_url(conn_id: str | None) -> str | None:
    """``redis://[:password@]host:port/db`` from an Airflow Redis connection (None without one)."""
    if not conn_id:
        return None
    from urllib.parse import quote

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:
        raise ConfigError("budget_conn_id", f"cannot use connection {conn_id!r}: {type(exc).__name__}") from exc
    if conn.password:
        mask_secret(conn.password)
    auth = f":{quote(conn.password, safe='')}@" if conn.password else ""
    db = (conn.extra_dejson or {}).get("db", 0)
    return f"redis://{auth}{conn.host or '127.0.0.1'}:{conn.port or 6379}/{db}"


def task_front(task: Writer, report_folder: str, duckdb_external_access: bool) -> Front:
    """What a task brings to the run's preparation: its connections (the hooks above), and
    Airflow's home and the task's names for the files the settings do not place (a
    table-only report's run page goes to the DAG's own ``report_folder``)."""
    from polyv_connector.deployment import airflow_home
    from polyv_connector.run import Front

    return Front(
        db_hook=db_hook,
        same_database=same_database,
        home=airflow_home(),
        dag_id=task.dag_id,
        run_id=task.run_id or "run",
        task_id=task.task_id,
        map_index=task.map_index,
        report_folder=report_folder,
        duckdb_external_access=duckdb_external_access,
    )


def warn_if_budget_unshared(budget_url: str | None, log: Any) -> None:
    """Warn when the executor may spread a DAG's tasks over hosts that do not share the request
    budget (every task says so: whichever log someone opens shows it)."""
    from airflow.sdk.configuration import conf

    from polyv_connector.budget.hosts import unshared_budget_warning

    warning = unshared_budget_warning(conf.get("core", "executor", fallback="") or "", budget_url)
    if warning:
        log.warning("POLYV budget: %s", warning)


def _base_url(host: str | None, port: int | None) -> str:
    """The API base URL from the connection's host (and port, as a URI connection sets it)."""
    base_url = (host or "").strip()
    if not base_url:
        return DEFAULT_BASE_URL
    if "://" not in base_url:
        # A bare host name ("api.polyv.net") is what people type into the Host box.
        base_url = "https://" + base_url
    parts = urlsplit(base_url)
    if port and parts.port is None:
        base_url = urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}"))
    return base_url


def _scrub(text: str, hook: PolyvHook) -> str:
    """Belt and braces: the engine never puts the secret in a message, but a driver might."""
    from polyv_connector.airflow.failures import scrub_secret

    secret = hook._connection_fields[0].app_secret.reveal() if "_connection_fields" in hook.__dict__ else ""
    text_scrubbed: str = scrub_secret(text, secret)
    return text_scrubbed
