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

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from polyv_connector import exit_codes
from polyv_connector.errors import ConfigError, InputError
from tests.airflow.support import APP_ID, FIELDS, PG_URI, PLANTED_SECRET, conn_json, pg_exec, pg_rows

pytestmark = [pytest.mark.airflow, pytest.mark.postgres]

ACCEPTED, REFUSED, READ_ONLY = "accepted", "refused", "read-only"

SEL = "SELECT viewer_id, custom_field_id, custom_field_value FROM {s}.attrs"


@dataclass(frozen=True)
class Case:
    name: str
    sql: str  # ``{s}`` is the test's schema
    outcome: str
    names: str = ""  # what the refusal's message must name


#: PostgreSQL calls that reach outside the query's data: (the call, what the refusal names).
PG_OUTSIDE = [
    ("pg_read_file('/etc/passwd')", "pg_read_file()"),
    ("pg_read_binary_file('/etc/passwd')", "pg_read_binary_file()"),
    ("(SELECT string_agg(f, ',') FROM pg_ls_dir('.') AS f)", "pg_ls_dir()"),
    ("(SELECT string_agg(name, ',') FROM pg_ls_logdir())", "pg_ls_logdir()"),
    ("pg_stat_file('postgresql.conf')", "pg_stat_file()"),
    ("lo_import('/etc/passwd')", "lo_import()"),
    ("lo_export(1, '/tmp/polyv_lo')", "lo_export()"),
    ("dblink_exec('dbname=test', 'DELETE FROM {s}.victim')", "dblink_exec()"),
    ("(SELECT a FROM dblink('dbname=test', 'SELECT 1') AS t(a int))", "dblink()"),
    ("pg_terminate_backend(pg_backend_pid())", "pg_terminate_backend()"),
    ("pg_cancel_backend(pg_backend_pid())", "pg_cancel_backend()"),
    ("pg_advisory_lock(42)", "pg_advisory_lock()"),
    ("pg_try_advisory_lock(42)", "pg_try_advisory_lock()"),
    ("pg_sleep(30)", "pg_sleep()"),
    ("pg_sleep_for('30 seconds')", "pg_sleep_for()"),
    ("pg_notify('polyv', 'x')", "pg_notify()"),
    ("set_config('transaction_read_only', 'off', true)", "set_config()"),
    ("query_to_xml('DELETE FROM {s}.victim RETURNING 1', true, true, '')", "query_to_xml()"),
    # the known bypasses: schema-qualified, quoted, mixed case, Unicode-escaped names
    ("pg_catalog.pg_read_file('/etc/passwd')", "pg_read_file()"),
    ("pg_catalog.\"pg_read_file\"('/etc/passwd')", "pg_read_file()"),
    ("PG_Read_File('/etc/passwd')", "pg_read_file()"),
    ("U&\"pg\\0072ead_file\"('/etc/passwd')", "not a plain identifier"),
]

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
    # refused by the parser: functions that reach outside the query's data (files, other
    # connections, other sessions, sleeps, settings, SQL run from a string), however written
    *(
        Case(
            f"calls {call}",
            f"SELECT v.viewer_id, 'PAY_STATUS' AS custom_field_id, ({call})::text AS custom_field_value "
            "FROM {s}.attrs v",
            REFUSED,
            named,
        )
        for call, named in PG_OUTSIDE
    ),
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
def warehouse(corpus_sim: Any, monkeypatch: pytest.MonkeyPatch, pg_schema: str) -> str:
    """A throwaway schema with the source rows and a victim (a table, a sequence, a function and
    a procedure that write); the connections of the operator in the environment."""
    s = pg_schema
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
    return s


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
            assert case.names in str(cause)
        assert corpus_sim.stats.save_requests == 0 and not corpus_sim.values
    # Nothing the query could reach was changed.
    assert pg_rows(f"SELECT count(*) FROM {s}.victim") == [(3,)]
    assert pg_rows(f"SELECT last_value, is_called FROM {s}.seq") == [(1, False)]
    assert not _exists(f"{s}.stolen")
    assert pg_rows(f"SELECT count(*) FROM {s}.attrs") == [(2,)]


def test_the_corpus_covers_what_the_issue_lists() -> None:
    assert len(CORPUS) >= 10
    assert {c.outcome for c in CORPUS} == {ACCEPTED, REFUSED, READ_ONLY}


# ---- MariaDB and DuckDB: the same promise on the other engines -----------------------------------
#: (engine, sql, what the refusal names); each runs through the operator on a real connection
#: (the MySQL provider's MySqlHook with mysqlclient, the DuckDB provider's DuckDBHook on a file).
ENGINE_OUTSIDE = [
    ("mariadb", "SELECT uid, 'PAY_STATUS' AS field, LOAD_FILE('/etc/passwd') AS val FROM attrs", "load_file()"),
    ("mariadb", "SELECT uid, 'PAY_STATUS' AS field, SLEEP(30) AS val FROM attrs", "sleep()"),
    ("mariadb", "SELECT uid, 'PAY_STATUS' AS field, `Sleep`(30) AS val FROM attrs", "sleep()"),
    ("mariadb", "SELECT uid, 'PAY_STATUS' AS field, BENCHMARK(100000000, MD5('a')) AS val FROM attrs", "benchmark()"),
    ("mariadb", "SELECT uid, 'PAY_STATUS' AS field, GET_LOCK('polyv', 1) AS val FROM attrs", "get_lock()"),
    ("mariadb", "SELECT uid, 'PAY_STATUS' AS field, RELEASE_LOCK('polyv') AS val FROM attrs", "release_lock()"),
    ("mariadb", "SELECT uid, 'PAY_STATUS' AS field, IS_FREE_LOCK('polyv') AS val FROM attrs", "is_free_lock()"),
    ("mariadb", "SELECT uid, 'PAY_STATUS' AS field, @v := val AS val FROM attrs", "user variable assignment"),
    ("mariadb", "SELECT uid, field, val FROM attrs INTO OUTFILE '/tmp/polyv_outfile'", "INTO OUTFILE"),
    ("mariadb", "SELECT uid, field, val FROM attrs INTO DUMPFILE '/tmp/polyv_dumpfile'", "INTO DUMPFILE"),
    ("mariadb", "SELECT uid, field, val FROM attrs /*! INTO OUTFILE '/tmp/polyv_outfile' */", "executable comment"),
    ("mariadb", "SELECT uid, field, val FROM attrs /*M! INTO OUTFILE '/tmp/polyv_outfile' */", "executable comment"),
    ("mariadb", "SELECT uid, field, val /*!, LOAD_FILE('/etc/passwd') */ FROM attrs", "executable comment"),
    (
        "duckdb",
        "SELECT 'u1' AS uid, 'PAY_STATUS' AS field, content AS val FROM read_text('/proc/self/environ')",
        "read_text()",
    ),
    ("duckdb", "SELECT 'u1' AS uid, 'PAY_STATUS' AS field, column0 AS val FROM read_csv('/etc/passwd')", "read_csv()"),
    ("duckdb", "SELECT 'u1' AS uid, 'PAY_STATUS' AS field, file AS val FROM glob('/etc/*')", "glob()"),
    (
        "duckdb",
        "SELECT 'u1' AS uid, 'PAY_STATUS' AS field, column0 AS val FROM '/etc/passwd'",
        "a file or URL as a table",
    ),
    ("duckdb", "FROM 'https://example.com/x.csv'", "a file or URL as a table"),
    (
        "duckdb",
        "SELECT * FROM query('SELECT ''u1'' AS uid, ''F'' AS field, content AS val FROM read_text(''/etc/passwd'')')",
        "query()",
    ),
    ("duckdb", "SELECT * FROM query_table('attrs')", "query_table()"),
    ("duckdb", "SELECT uid, field, CAST(nextval('seq') AS VARCHAR) AS val FROM attrs", "nextval()"),
    ("duckdb", "SELECT * FROM parquet_scan('/tmp/x.parquet')", "parquet_scan()"),
    (
        "duckdb",
        "SELECT * FROM postgres_scan('host=127.0.0.1 user=postgres dbname=test', 'public', 't')",
        "postgres_scan()",
    ),
    ("duckdb", "SELECT * FROM sqlite_scan('/tmp/x.db', 't')", "sqlite_scan()"),
    ("duckdb", "SELECT * FROM mysql_query('db', 'SELECT 1')", "mysql_query()"),
    ("duckdb", "SELECT * FROM iceberg_scan('s3://bucket/table')", "iceberg_scan()"),
    ("duckdb", "SELECT * FROM delta_scan('s3://bucket/table')", "delta_scan()"),
    ("duckdb", "SELECT * FROM Main.READ_TEXT('/etc/passwd')", "read_text()"),
]


@pytest.fixture
def engine_warehouse(
    request: pytest.FixtureRequest, corpus_sim: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Any]]:
    """(connection id, a plain connection factory) of a throwaway MariaDB database or DuckDB file
    holding ``attrs`` (and a sequence ``seq``), the operator's connections in the environment."""

    engine = request.param
    corpus_sim.reset()
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_DEFAULT", conn_json(corpus_sim.base_url))
    if engine == "duckdb":
        import duckdb

        path = str(tmp_path / "warehouse.duckdb")
        with duckdb.connect(path) as conn:
            conn.execute("CREATE TABLE attrs (uid VARCHAR, field VARCHAR, val VARCHAR); CREATE SEQUENCE seq")
            conn.execute("INSERT INTO attrs VALUES ('u1', 'PAY_STATUS', 'a'), ('u2', 'PAY_STATUS', 'b')")
        monkeypatch.setenv("AIRFLOW_CONN_POLYV_DUCKDB", json.dumps({"conn_type": "duckdb", "host": path}))
        yield "polyv_duckdb", lambda: duckdb.connect(path)
        return
    from tests.services import mysql_connect

    name = request.getfixturevalue("mysql_db")
    conn = mysql_connect(name)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE attrs (uid VARCHAR(32), field VARCHAR(32), val VARCHAR(64))")
        cur.execute("INSERT INTO attrs VALUES ('u1', 'PAY_STATUS', 'a'), ('u2', 'PAY_STATUS', 'b')")
    conn.commit()
    conn.close()
    extra = json.dumps({"charset": "utf8mb4"})
    value = {"conn_type": "mysql", "host": "127.0.0.1", "port": 3306, "login": "root", "schema": name, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_POLYV_MYSQL", json.dumps(value))
    yield "polyv_mysql", lambda: mysql_connect(name)


def _tables(connect: Any) -> set[str]:
    conn = connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT table_name FROM information_schema.tables")
        return {str(r[0]) for r in cur.fetchall()}
    finally:
        conn.close()


def _run_engine(conn_id: str, sql: str, **kwargs: Any) -> dict[str, Any]:
    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    op = PolyvViewerFieldSyncOperator(
        task_id="sync",
        source_conn_id=conn_id,
        source_sql=sql,
        viewer_id_column="uid",
        field_id_column="field",
        value_column="val",
        report_table="polyv_report",
        state_table="polyv_state",
        **kwargs,
    )
    result: dict[str, Any] = op.execute({"ti": _TI(), "run_id": "manual__corpus"})  # type: ignore[arg-type]
    return result


def _engine_param(engine: str) -> Any:
    return pytest.param(engine, marks=pytest.mark.mariadb) if engine == "mariadb" else engine


@pytest.mark.parametrize(
    ("engine_warehouse", "sql", "names"),
    [(_engine_param(e), sql, names) for e, sql, names in ENGINE_OUTSIDE],
    ids=[f"{e}:{sql[:60]}" for e, sql, _ in ENGINE_OUTSIDE],
    indirect=["engine_warehouse"],
)
def test_engine_calls_outside_the_data_are_refused_before_running(
    engine_warehouse: tuple[str, Any], sql: str, names: str, corpus_sim: Any
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    conn_id, connect = engine_warehouse
    with pytest.raises(AirflowFailException) as raised:
        _run_engine(conn_id, sql)
    cause = raised.value.__cause__
    assert type(cause) is ConfigError and cause.setting == "source_sql", repr(cause)
    assert exit_codes.for_error(cause) is exit_codes.CONFIG  # exit 2
    assert names in str(cause) and names in str(raised.value)
    # Refused before any connection was opened: not even the state or report table exists.
    assert not {"polyv_state", "polyv_report"} & _tables(connect)
    assert corpus_sim.stats.save_requests == 0 and not corpus_sim.values


@pytest.mark.parametrize("engine_warehouse", ["duckdb"], indirect=True)
def test_the_corpus_query_forms_that_are_fine_still_run_on_duckdb(
    engine_warehouse: tuple[str, Any], corpus_sim: Any
) -> None:
    """With the lock-down on, an ordinary query runs and the report and state land in the same
    DuckDB file (one database instance in this process: the settings hold for all of it)."""
    conn_id, connect = engine_warehouse
    summary = _run_engine(conn_id, "SELECT uid, field, val FROM attrs")
    assert summary["ok"] is True and summary["counts"]["sent"] == 2, summary
    assert {"polyv_state", "polyv_report"} <= _tables(connect)


# ---- the engines' own refusals, the guard bypassed ------------------------------------------------
#: (statement, DuckDB's exception class): what a DuckDB source connection refuses by itself.
#: ``{d}`` is a folder of the test's own.
DUCKDB_ENGINE_REFUSES = [
    ("SELECT * FROM read_text('/etc/passwd')", "PermissionException"),
    ("SELECT * FROM read_text('/proc/self/environ')", "PermissionException"),
    ("SELECT * FROM read_csv('/etc/passwd')", "PermissionException"),
    ("SELECT * FROM glob('/etc/*')", "PermissionException"),
    ("SELECT * FROM query('SELECT * FROM read_text(''/etc/passwd'')')", "PermissionException"),
    ("SELECT * FROM read_csv('https://example.com/x.csv')", "PermissionException"),
    ("SELECT * FROM '/etc/passwd'", "CatalogException"),  # no replacement scan of a path
    ("ATTACH '{d}/other.duckdb' AS other", "PermissionException"),
    ("COPY (SELECT 1) TO '{d}/out.csv'", "PermissionException"),
    ("INSTALL httpfs", "PermissionException"),
    ("LOAD httpfs", "PermissionException"),
    ("SET enable_external_access = true", "InvalidInputException"),  # the configuration is locked
    ("SET lock_configuration = false", "InvalidInputException"),
    ("SET autoload_known_extensions = true", "InvalidInputException"),
    ("SELECT nextval('seq')", "TransactionException"),  # the read-only transaction
    ("INSERT INTO attrs VALUES ('x', 'y', 'z')", "TransactionException"),
]


@pytest.mark.parametrize(("statement", "error"), DUCKDB_ENGINE_REFUSES, ids=[s for s, _ in DUCKDB_ENGINE_REFUSES])
@pytest.mark.parametrize("engine_warehouse", ["duckdb"], indirect=True)
def test_duckdb_refuses_by_itself_on_a_source_connection(
    engine_warehouse: tuple[str, Any], statement: str, error: str, tmp_path: Any
) -> None:
    """The source's own connection (opened by SqlSource through the real DuckDBHook), a statement
    run on it directly: DuckDB refuses what the guard would have refused."""
    import duckdb
    from airflow.sdk import BaseHook

    from polyv_connector.sources.sql import SqlSource

    conn_id, connect = engine_warehouse
    sql = statement.replace("{d}", str(tmp_path))
    # The control: on a connection of its own, DuckDB runs the statements that read a file.
    if "/etc/passwd" in sql and "FROM '" not in sql:
        plain = duckdb.connect()
        assert plain.execute(sql).fetchall()
        plain.close()
    source = SqlSource(BaseHook.get_hook(conn_id), table="attrs")
    conn = source._open()
    try:
        with pytest.raises(duckdb.Error) as raised:
            conn.execute(sql).fetchall()
        assert type(raised.value).__name__ == error, repr(raised.value)
    finally:
        conn.rollback()
        conn.close()
    # Nothing left the database, nothing was written in it.
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()
    check = connect()
    try:
        assert check.execute("SELECT count(*) FROM attrs").fetchall() == [(2,)]
        assert check.execute("SELECT nextval('seq')").fetchall() == [(1,)]  # never advanced
    finally:
        check.close()


@pytest.mark.parametrize("engine_warehouse", ["duckdb"], indirect=True)
def test_duckdb_external_access_is_the_authors_opt_out(
    engine_warehouse: tuple[str, Any], corpus_sim: Any, tmp_path: Any
) -> None:
    """A view over a file (what views over object storage look like) fails under the lock-down,
    with DuckDB's own permission error; the DAG author's ``duckdb_external_access=True`` lets
    it through. The argument is not templated: no trigger can set it."""
    from airflow.sdk.exceptions import AirflowFailException

    from polyv_connector.airflow.operators import PolyvViewerFieldSyncOperator

    conn_id, connect = engine_warehouse
    csv = tmp_path / "attrs.csv"
    csv.write_text("uid,field,val\nu1,PAY_STATUS,a\nu2,PAY_STATUS,b\n")
    conn = connect()
    conn.execute(f"CREATE VIEW remote_attrs AS SELECT * FROM read_csv('{csv}')")
    conn.close()
    assert "duckdb_external_access" not in PolyvViewerFieldSyncOperator.template_fields
    with pytest.raises(AirflowFailException) as raised:
        _run_engine(conn_id, "SELECT uid, field, val FROM remote_attrs")
    assert "Permission Error" in str(raised.value.__cause__)
    assert corpus_sim.stats.save_requests == 0
    summary = _run_engine(conn_id, "SELECT uid, field, val FROM remote_attrs", duckdb_external_access=True)
    assert summary["ok"] is True and summary["counts"]["sent"] == 2, summary


MYSQL_DRIVERS = ["mysqlclient (MySqlHook)", "mysql-connector-python", "PyMySQL"]


@pytest.mark.mariadb
@pytest.mark.parametrize("driver", MYSQL_DRIVERS)
@pytest.mark.parametrize("engine_warehouse", [_engine_param("mariadb")], indirect=True)
def test_mysql_source_sessions_run_one_statement_per_query(engine_warehouse: tuple[str, Any], driver: str) -> None:
    """The source's own connection, a second statement sent directly: the server refuses it
    (mysqlclient and mysql-connector-python turn multi-statements on by default)."""
    from airflow.sdk import BaseHook

    from polyv_connector.sources.sql import SqlSource

    conn_id, _ = engine_warehouse
    database = json.loads(os.environ["AIRFLOW_CONN_POLYV_MYSQL"])["schema"]
    if driver.startswith("mysqlclient"):
        connection: Any = BaseHook.get_hook(conn_id)
    elif driver == "PyMySQL":
        import pymysql

        connection = lambda: pymysql.connect(host="127.0.0.1", user="root", password="", database=database)  # noqa: E731
    else:
        import mysql.connector

        connection = lambda: mysql.connector.connect(host="127.0.0.1", user="root", password="", database=database)  # noqa: E731
    conn = SqlSource(connection, table="attrs")._open()
    try:
        cur = conn.cursor()
        # A syntax error (1064) at the second statement: the session runs one statement per query.
        with pytest.raises(Exception, match="1064"):
            cur.execute("SELECT 1; SELECT 2")
        cur.close()
    finally:
        conn.close()


@pytest.mark.mariadb
@pytest.mark.parametrize("engine_warehouse", [_engine_param("mariadb")], indirect=True)
def test_a_pymysql_source_that_asks_for_multi_statements_is_refused(engine_warehouse: tuple[str, Any]) -> None:
    import pymysql
    from pymysql.constants import CLIENT

    database = json.loads(os.environ["AIRFLOW_CONN_POLYV_MYSQL"])["schema"]
    from polyv_connector.sources.sql import SqlSource

    source = SqlSource(
        lambda: pymysql.connect(
            host="127.0.0.1", user="root", password="", database=database, client_flag=CLIENT.MULTI_STATEMENTS
        ),
        table="attrs",
    )
    with pytest.raises(InputError, match="several statements per query"):
        source._open()
