"""``PolyvHook``: the ``polyv`` connection from the environment, sending defaults, test_connection."""

from __future__ import annotations

import pytest

from polyv_connector.config import DEFAULT_BASE_URL
from polyv_connector.errors import ConfigError
from tests.airflow.support import APP_ID, PLANTED_SECRET, conn_json

pytestmark = pytest.mark.airflow


@pytest.fixture
def hook_cls():
    from polyv_connector.airflow.hooks import PolyvHook

    return PolyvHook


def test_test_connection_signs_a_field_list_call(sim, polyv_env, hook_cls):
    ok, message = hook_cls().test_connection()
    assert ok, message
    assert APP_ID in message and "4 custom field(s)" in message
    assert sim.stats.list_ok == 1
    assert PLANTED_SECRET not in message


def test_connection_test_respects_a_block_recorded_in_the_budget(sim, polyv_env, hook_cls, tmp_path, monkeypatch):
    from polyv_connector.budget import open_budget

    monkeypatch.setenv("POLYV_RUNTIME_DIR", str(tmp_path / "run"))
    other = open_budget(None, api_base_url=sim.base_url, rate=None, run_id="other", max_rps=None)
    other.record_block()  # another run met POLYV's block a moment ago
    other.close()
    ok, message = hook_cls().test_connection()
    assert not ok and "block" in message.lower()
    assert sim.stats.api_requests == 0  # the test itself sent nothing


def test_wrong_secret_fails_without_revealing_it(sim, monkeypatch, hook_cls):
    wrong = "WRONG-planted-secret-31f7"
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_DEFAULT", conn_json(sim.base_url, secret=wrong))
    ok, message = hook_cls().test_connection()
    assert not ok
    assert "invalid signature" in message
    assert wrong not in message and PLANTED_SECRET not in message


def test_unreachable_api_is_a_failed_test_not_an_exception(monkeypatch, hook_cls):
    from tests.airflow.support import free_port

    monkeypatch.setenv("AIRFLOW_CONN_POLYV_DEFAULT", conn_json(f"http://127.0.0.1:{free_port()}"))
    ok, message = hook_cls().test_connection()
    assert not ok and message
    assert PLANTED_SECRET not in message


def test_connection_from_env_json_with_extras(sim, monkeypatch, hook_cls):
    # Extras as users type them: numbers, and numbers as strings (env JSON, secrets backends).
    monkeypatch.setenv(
        "AIRFLOW_CONN_POLYV_CUSTOM",
        conn_json(sim.base_url + "/", max_rps="40", batch_size=250, concurrency="3", timeout=12.5),
    )
    hook = hook_cls("polyv_custom")
    creds = hook.get_credentials()
    assert (creds.app_id, creds.app_secret.reveal(), creds.base_url) == (APP_ID, PLANTED_SECRET, sim.base_url)
    assert PLANTED_SECRET not in repr(creds)
    send = hook.get_send_options()
    assert (send.max_rps, send.batch_size, send.concurrency, send.timeout_s) == (40.0, 250, 3, 12.5)
    # Operator arguments override the connection's defaults; None means "keep the default".
    send = hook.get_send_options(max_rps=10, batch_size=None, max_attempts=2)
    assert (send.max_rps, send.batch_size, send.max_attempts) == (10.0, 250, 2)


def test_prefixed_extras_from_the_ui_are_read(monkeypatch, hook_cls):
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_UI", conn_json("", **{"extra__polyv__batch_size": "100"}))
    hook = hook_cls("polyv_ui")
    assert hook.get_send_options().batch_size == 100
    assert hook.get_credentials().base_url == DEFAULT_BASE_URL  # host left empty


def test_host_without_scheme_means_https(monkeypatch, hook_cls):
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_BARE", conn_json("api.polyv.net"))
    assert hook_cls("polyv_bare").get_credentials().base_url == "https://api.polyv.net"


def test_connection_as_uri(monkeypatch, hook_cls):
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_URI", "polyv://app%2D1:s3cret%2Fx%3Ay@api.example.com:8443?max_rps=20")
    hook = hook_cls("polyv_uri")
    creds = hook.get_credentials()
    assert (creds.app_id, creds.app_secret.reveal()) == ("app-1", "s3cret/x:y")
    assert creds.base_url == "https://api.example.com:8443"
    assert hook.get_send_options().max_rps == 20.0


@pytest.mark.parametrize(("extra", "value"), [("max_rps", "fast"), ("batch_size", "2.5"), ("max_rps", 500)])
def test_bad_extras_name_the_setting(monkeypatch, hook_cls, extra, value):
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_BAD", conn_json("http://x", **{extra: value}))
    with pytest.raises(ConfigError, match=extra):
        hook_cls("polyv_bad").get_send_options()


def test_missing_secret_names_the_connection_field(monkeypatch, hook_cls):
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_NOSECRET", conn_json("http://x", secret=""))
    with pytest.raises(ConfigError, match=r"polyv_nosecret.*password \(appSecret\)"):
        hook_cls("polyv_nosecret").get_credentials()


def test_secret_is_masked_as_soon_as_the_connection_is_read(monkeypatch, hook_cls):
    import polyv_connector.airflow.hooks as hooks_module

    masked: list[str] = []
    real_mask = hooks_module.mask_secret

    def spy(value, name=None):
        masked.append(value)
        real_mask(value, name)

    monkeypatch.setattr(hooks_module, "mask_secret", spy)
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_MASK", conn_json("http://x"))
    hook_cls("polyv_mask").get_credentials()
    assert masked == [PLANTED_SECRET]
    from airflow.sdk._shared.secrets_masker import redact

    assert PLANTED_SECRET not in str(redact(f"token={PLANTED_SECRET}"))


def test_get_conn_is_one_pooled_client(sim, polyv_env, hook_cls):
    hook = hook_cls()
    client = hook.get_conn()
    assert hook.get_conn() is client
    assert len(client.list_fields()) == 4
    hook.close()


@pytest.mark.parametrize("secret", [PLANTED_SECRET, "a-wrong-secret-4711"])
def test_airflow_connections_test_prints_the_providers_message(sim, secret):
    """``airflow connections test`` (a real CLI subprocess, testing enabled) shows what was
    reached, or why not; never the secret."""
    import os
    import subprocess

    from tests.stack import BIN, REPO, subprocess_env

    env = subprocess_env(
        AIRFLOW__CORE__TEST_CONNECTION="Enabled", AIRFLOW_CONN_POLYV_CLI_TEST=conn_json(sim.base_url, secret=secret)
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [str(BIN / "airflow"), "connections", "test", "polyv_cli_test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    if secret == PLANTED_SECRET:
        assert proc.returncode == 0, out
        assert f"POLYV connection test: Connected to {sim.base_url} as appId {APP_ID}: 4 custom field(s)" in out
        assert "Connection success!" in out
    else:
        assert proc.returncode == 1, out
        assert "Connection failed!" in out and "invalid signature" in out and "check the appId and appSecret" in out
    assert secret not in out


def test_diff_in_warehouse_state_connection_must_reach_the_source_database(monkeypatch):
    """Another role on the same database may keep the state (a read-only source); a state table
    in another database would be a different (perhaps stale) table: refused."""
    from polyv_connector.airflow.hooks import same_database

    monkeypatch.setenv("AIRFLOW_CONN_SRC_READER", "postgresql://reader@db.example:5432/dwh")
    monkeypatch.setenv("AIRFLOW_CONN_SRC_WRITER", "postgresql://writer:pw@DB.example:5432/dwh")
    monkeypatch.setenv("AIRFLOW_CONN_OTHER_DB", "postgresql://writer@db.example:5432/staging")
    assert same_database("src_reader", "src_reader")
    assert same_database("src_writer", "src_reader")
    assert not same_database("other_db", "src_reader")
    assert not same_database(None, "src_reader")
