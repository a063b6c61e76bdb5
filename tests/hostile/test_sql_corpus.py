"""Hostile source SQL, table-driven, through the operator against real PostgreSQL and the simulator.

A ``source_sql`` may come from whoever can trigger a DAG. Each case is one query and what must
become of it: ``ACCEPTED`` (read and sent), ``REFUSED`` (a ConfigError naming ``source_sql``,
exit 2, before any connection is opened: not even the state or report table is created), or
``READ_ONLY`` (a query the parser cannot tell writes: the database refuses it inside the
read-only transaction, an InputError naming ``source_sql``, exit 2). In every case but
``ACCEPTED`` the victim table, its sequence and everything else are intact, and nothing
reached the simulator.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from polyv_connector import exit_codes
from polyv_connector.errors import ConfigError, InputError
from tests.airflow.support import APP_ID, FIELDS, PG_DSN, PG_URI, PLANTED_SECRET, conn_json, in_ci, pg_exec, pg_rows

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]

ACCEPTED, REFUSED, READ_ONLY = "accepted", "refused", "read-only"

SEL = "SELECT viewer_id, custom_field_id, custom_field_value FROM {s}.attrs"


@dataclass(frozen=True)
class Case:
    name: str
    sql: str  # ``{s}`` is the test's schema
    outcome: str


CORPUS = [
    # accepted: one read-only query, however it is written
    Case("trailing semicolon", SEL + " ;", ACCEPTED),
    Case("trailing semicolon and comment", SEL + "; -- done", ACCEPTED),
    Case("WITH query", "WITH latest AS (" + SEL + ") SELECT * FROM latest", ACCEPTED),
    Case(
        "VALUES as a relation",
        "SELECT * FROM (VALUES ('v1', 'PAY_STATUS', 'a'), ('v2', 'PAY_STATUS', 'b')) "
        "AS v(viewer_id, custom_field_id, custom_field_value)",
        ACCEPTED,
    ),
    Case("a statement inside a block comment is a comment", SEL + " /* ; DROP TABLE {s}.victim */", ACCEPTED),
    Case(
        "a statement inside a dollar-quoted string",
        SEL + " WHERE custom_field_value <> $$;DROP TABLE {s}.victim;$$",
        ACCEPTED,
    ),
    # refused by the parser: more than one statement
    Case("stacked DROP", SEL + "; DROP TABLE {s}.victim", REFUSED),
    Case("SELECT; COMMIT; DROP", SEL + "; COMMIT; DROP TABLE {s}.victim; SELECT 1", REFUSED),
    Case("a line comment before a second statement", SEL + " -- harmless\n; DROP TABLE {s}.victim", REFUSED),
    Case("a block comment before a second statement", SEL + " /* note */; DELETE FROM {s}.victim --", REFUSED),
    Case("a backslash does not escape a quote", "SELECT 'a\\'; DROP TABLE {s}.victim; --' AS x", REFUSED),
    Case("\\r ends a line comment", SEL + " --x\r; DROP TABLE {s}.victim", REFUSED),
    # refused by the parser: not a query, or a query that writes
    Case("DROP", "DROP TABLE {s}.victim", REFUSED),
    Case("DELETE", "DELETE FROM {s}.victim", REFUSED),
    Case("UPDATE", "UPDATE {s}.victim SET n = 0", REFUSED),
    Case("INSERT ... RETURNING", "INSERT INTO {s}.victim VALUES (99) RETURNING 'v', 'PAY_STATUS', 'x'", REFUSED),
    Case("TRUNCATE", "TRUNCATE {s}.victim", REFUSED),
    Case("COPY", "COPY {s}.victim TO STDOUT", REFUSED),
    Case("CALL", "CALL {s}.wipe_proc()", REFUSED),
    Case("DO", "DO $$ BEGIN DELETE FROM {s}.victim; END $$", REFUSED),
    Case("SET read-write", "SET default_transaction_read_only = off", REFUSED),
    Case("SET ROLE", "SET ROLE postgres", REFUSED),
    Case("EXPLAIN ANALYZE runs its statement", "EXPLAIN ANALYZE DELETE FROM {s}.victim", REFUSED),
    Case("data-modifying WITH", "WITH d AS (DELETE FROM {s}.victim RETURNING *) " + SEL, REFUSED),
    Case("SELECT ... INTO creates a table", "SELECT * INTO {s}.stolen FROM {s}.victim", REFUSED),
    Case("FOR UPDATE locks rows", SEL + " FOR UPDATE", REFUSED),
    Case("unbalanced parenthesis breaks out of the probe", SEL + ") x; DROP TABLE {s}.victim; SELECT (1", REFUSED),
    # a query the parser cannot see writing: refused by the read-only transaction
    Case(
        "a function that deletes",
        "SELECT viewer_id, custom_field_id, {s}.wipe() AS custom_field_value FROM {s}.attrs",
        READ_ONLY,
    ),
    Case(
        "nextval",
        "SELECT viewer_id, custom_field_id, nextval('{s}.seq')::text AS custom_field_value FROM {s}.attrs",
        READ_ONLY,
    ),
]


# ---- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus_sim() -> Iterator[Any]:
    from polyv_connector.simulator import PolyvSimulator

    with PolyvSimulator(apps={APP_ID: PLANTED_SECRET}, fields=FIELDS) as sim:
        yield sim


@pytest.fixture
def warehouse(corpus_sim: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A throwaway schema with the source rows and a victim (a table, a sequence, a function and
    a procedure that write); the connections of the operator in the environment."""
    import psycopg

    try:
        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        if in_ci():
            pytest.fail(f"PostgreSQL is required in CI and not reachable at {PG_DSN!r}: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    s = f"polyv_hostile_{uuid.uuid4().hex[:10]}"
    pg_exec(f"CREATE SCHEMA {s}")
    pg_exec(f"CREATE TABLE {s}.attrs (viewer_id text, custom_field_id text, custom_field_value text)")
    pg_exec(f"INSERT INTO {s}.attrs VALUES ('v1', 'PAY_STATUS', 'a'), ('v2', 'PAY_STATUS', 'b')")
    pg_exec(f"CREATE TABLE {s}.victim (n int)")
    pg_exec(f"INSERT INTO {s}.victim VALUES (1), (2), (3)")
    pg_exec(f"CREATE SEQUENCE {s}.seq")
    pg_exec(f"CREATE FUNCTION {s}.wipe() RETURNS text LANGUAGE sql AS $$ DELETE FROM {s}.victim RETURNING 'x' $$")
    pg_exec(f"CREATE PROCEDURE {s}.wipe_proc() LANGUAGE sql AS $$ DELETE FROM {s}.victim $$")
    corpus_sim.reset()
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_DEFAULT", conn_json(corpus_sim.base_url))
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_WAREHOUSE", PG_URI)
    try:
        yield s
    finally:
        pg_exec(f"DROP SCHEMA IF EXISTS {s} CASCADE")


class _TI:
    def xcom_push(self, key: str, value: Any) -> None:
        pass


def _run(schema: str, sql: str) -> dict[str, Any]:
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    op = PolyvViewerFieldSyncOperator(
        task_id="sync",
        source_conn_id="polyv_warehouse",
        source_sql=sql,
        viewer_id_column="viewer_id",
        field_id_column="custom_field_id",
        value_column="custom_field_value",
        report_table=f"{schema}.report",
        state_table=f"{schema}.state",
    )
    result: dict[str, Any] = op.execute({"ti": _TI(), "run_id": "manual__corpus"})  # type: ignore[arg-type]
    return result


def _exists(relation: str) -> bool:
    return bool(pg_rows("SELECT to_regclass(%s) IS NOT NULL", (relation,))[0][0])


# ---- the corpus ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_hostile_source_sql(case: Case, warehouse: str, corpus_sim: Any) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    s = warehouse
    sql = case.sql.replace("{s}", s)
    if case.outcome == ACCEPTED:
        summary = _run(s, sql)
        assert summary["ok"] is True and summary["counts"]["sent"] == 2, summary
        assert {v for (app, v, f) in corpus_sim.values if app == APP_ID} == {"v1", "v2"}
    else:
        with pytest.raises(AirflowFailException) as raised:  # no retry: a person must fix it
            _run(s, sql)
        cause = raised.value.__cause__
        expected = ConfigError if case.outcome == REFUSED else InputError
        assert type(cause) is expected, repr(cause)
        assert cause.setting == "source_sql"
        assert exit_codes.for_error(cause) is exit_codes.CONFIG  # exit 2
        assert str(raised.value).startswith("POLYV sync: ") and PLANTED_SECRET not in str(raised.value)
        if case.outcome == READ_ONLY:
            assert "read-only transaction" in str(cause)
        else:
            # Refused before any connection was opened: not even the state or report table exists.
            assert not _exists(f"{s}.state") and not _exists(f"{s}.report")
        assert corpus_sim.stats.save_requests == 0 and not corpus_sim.values
    # Nothing the query could reach was changed.
    assert pg_rows(f"SELECT count(*) FROM {s}.victim") == [(3,)]
    assert pg_rows(f"SELECT last_value, is_called FROM {s}.seq") == [(1, False)]
    assert not _exists(f"{s}.stolen")
    assert pg_rows(f"SELECT count(*) FROM {s}.attrs") == [(2,)]


def test_the_corpus_covers_what_the_issue_lists() -> None:
    assert len(CORPUS) >= 10
    assert {c.outcome for c in CORPUS} == {ACCEPTED, REFUSED, READ_ONLY}
