"""Great Expectations suites: loading, row rejection, run gates, chunking, results on disk.

Real GX throughout (no mocks). GX's import is paid once per test session; a SuiteValidator
is cheap after that, but it is stateful (one per run), so each test builds its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from polyv_connector import ConfigError, Credentials, SyncOptions, exit_codes, sync
from polyv_connector.engine.result import SyncResult
from polyv_connector.expectations import SuiteValidator, bundled_suite_path
from polyv_connector.report import ParquetReport
from polyv_connector.sources.parquet import ParquetSource
from tests.conftest import APP_ID, FAST, read_report, write_items

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "expectations" / "viewer_custom_fields.json"

REGEX = "expect_column_values_to_match_regex(viewerId)"
IN_SET = "expect_column_values_to_be_in_set(customFieldValue)"
USER_SUITE = {
    "name": "user_suite",
    "expectations": [
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "viewerId", "regex": r"^v\d+$"}},
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "customFieldValue", "value_set": ["paid", "free"]},
        },
    ],
}
# (viewerId, customFieldId, customFieldValue), and which user-suite expectations each row fails.
ROWS: list[tuple[str, str, str]] = [
    ("v1", "PAY_STATUS", "paid"),
    ("x2", "PAY_STATUS", "paid"),  # regex
    ("v3", "PAY_STATUS", "unknown"),  # value set
    ("v4", "VIP_LEVEL", "free"),
    ("bad", "VIP_LEVEL", "gold"),  # both
    ("v6", "VIP_LEVEL", "free"),
    ("v7", "PAY_STATUS", "free"),
]
EXPECTED_FAILURES = {1: [REGEX], 2: [IN_SET], 4: [REGEX, IN_SET]}


def write_suite(path: Path, suite: dict | str) -> Path:
    path.write_text(suite if isinstance(suite, str) else json.dumps(suite), encoding="utf-8")
    return path


def items_table(rows: list[tuple[str | None, str | None, str | None]], first_row: int = 0) -> pa.Table:
    """An item chunk exactly as the engine builds it."""
    return pa.table(
        {
            "rowNumber": pa.array(range(first_row, first_row + len(rows)), pa.int64()),
            "viewerId": pa.array([r[0] for r in rows], pa.string()),
            "customFieldId": pa.array([r[1] for r in rows], pa.string()),
            "customFieldValue": pa.array([r[2] for r in rows], pa.string()),
        }
    )


@pytest.fixture(scope="module")
def user_suite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_suite(tmp_path_factory.mktemp("suites") / "user.json", USER_SUITE)


def run_sync(
    tmp_path: Path, creds: Credentials, rows: list, suite: Path, **options: object
) -> tuple[SyncResult, list[dict], SuiteValidator]:
    src = write_items(tmp_path / "in.parquet", rows)
    report = tmp_path / "report.parquet"
    validator = SuiteValidator.from_file(str(suite), report_dir=str(report))
    opts = SyncOptions(**{"send": FAST, "max_rejected_fraction": 0.5, **options})  # type: ignore[arg-type]
    res = sync(ParquetSource(str(src)), creds, opts, ParquetReport(str(report)), validator=validator)
    return res, read_report(report), validator


# -- loading --------------------------------------------------------------------------------


@pytest.mark.slow
def test_bundled_suite_is_a_plain_gx_suite_covering_the_required_checks() -> None:
    import great_expectations as gx

    assert bundled_suite_path().read_bytes() == BUNDLED.read_bytes()
    suite = gx.ExpectationSuite(**json.loads(BUNDLED.read_text(encoding="utf-8")))
    got = {(e.expectation_type, e.configuration.kwargs.get("column")) for e in suite.expectations}
    assert {("expect_column_to_exist", c) for c in ("viewerId", "customFieldId", "customFieldValue")} <= got
    assert {
        ("expect_column_values_to_not_be_null", c) for c in ("viewerId", "customFieldId", "customFieldValue")
    } <= got
    assert ("expect_column_values_to_not_match_regex", "viewerId") in got  # blank
    lengths = [e for e in suite.expectations if e.expectation_type == "expect_column_value_lengths_to_be_between"]
    assert lengths and lengths[0].configuration.kwargs["max_value"] == 64

    validator = SuiteValidator.from_file(str(BUNDLED))
    assert len(validator.planned) == len(suite.expectations)
    reasons = validator.validate_chunk(items_table([("v1", "F", "1"), ("  ", "F" * 65, None)]))
    assert reasons is not None and reasons[0].as_py() is None
    assert reasons[1].as_py() == (
        "expect_column_values_to_not_match_regex(viewerId); "
        "expect_column_value_lengths_to_be_between(customFieldId); "
        "expect_column_values_to_not_be_null(customFieldValue)"
    )
    assert validator.finish() == []


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"name": "s", "expectations": [', "not valid JSON"),
        (
            {
                "name": "s",
                "expectations": [{"type": "expect_column_values_to_be_purple", "kwargs": {"column": "viewerId"}}],
            },
            "unknown expectation type",
        ),
        (
            {
                "expectation_suite_name": "s",
                "expectations": [
                    {"expectation_type": "expect_column_values_to_not_be_null", "kwargs": {"column": "viewerId"}}
                ],
            },
            "0.x format",
        ),
        (
            {"name": "s", "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {}}]},
            "column: field required",
        ),
        (
            {
                "name": "s",
                "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "email"}}],
            },
            "refers to column(s) ['email']",
        ),
    ],
    ids=["bad-json", "unknown-type", "gx-0.x", "missing-kwarg", "unknown-column"],
)
def test_broken_suite_file_is_a_config_error_naming_file_and_problem(tmp_path, content, problem) -> None:
    path = write_suite(tmp_path / "broken_suite.json", content)
    with pytest.raises(ConfigError) as info:
        SuiteValidator.from_file(str(path))
    assert info.value.setting == "--expectations"
    assert str(path) in str(info.value) and problem in str(info.value), str(info.value)


def test_missing_suite_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        SuiteValidator.from_file(str(tmp_path / "nope.json"), setting="expectation_suite_path")


# -- row rejection --------------------------------------------------------------------------


def test_column_map_expectations_reject_exactly_the_violating_rows(user_suite_file) -> None:
    validator = SuiteValidator.from_file(str(user_suite_file))
    reasons = validator.validate_chunk(items_table(ROWS)).to_pylist()
    assert {i: r.split("; ") for i, r in enumerate(reasons) if r} == EXPECTED_FAILURES
    assert validator.finish() == []  # mostly=1 failures reject rows; they are not gates
    summary = validator.summary()["validation"]
    json.dumps(summary, allow_nan=False)
    assert [
        (e["type"], e["column"], e["success"], e["unexpectedCount"], e["action"]) for e in summary["expectations"]
    ] == [
        ("expect_column_values_to_match_regex", "viewerId", False, 2, "reject_rows"),
        ("expect_column_values_to_be_in_set", "customFieldValue", False, 2, "reject_rows"),
    ]
    assert summary["itemsRejected"] == 3 and summary["gateFailures"] == []


def test_rejected_rows_are_never_sent_and_the_rest_are(tmp_path, sim, creds, user_suite_file) -> None:
    res, report, _ = run_sync(tmp_path, creds, ROWS, user_suite_file)
    assert set(sim.values) == {(APP_ID, v, f) for i, (v, f, _) in enumerate(ROWS) if i not in EXPECTED_FAILURES}
    for row in report:
        if row["rowNumber"] in EXPECTED_FAILURES:
            assert row["status"] == "rejected"
            assert all(name in row["reason"] for name in EXPECTED_FAILURES[row["rowNumber"]]), row
        else:
            assert row["status"] == "sent", row
    assert res.exit_code == 0 and res.counts["rejected"] == 3


def test_mostly_below_one_rejects_the_rows_and_gates_the_run_when_exceeded() -> None:
    from polyv_connector.expectations.suite import build_suite

    suite = build_suite(
        {
            "name": "m",
            "expectations": [
                {
                    "type": "expect_column_values_to_match_regex",
                    "kwargs": {"column": "viewerId", "regex": r"^v\d+$", "mostly": 0.9},
                }
            ],
        },
        "m.json",
        "--expectations",
    )
    validator = SuiteValidator(suite, source="m.json")
    reasons = validator.validate_chunk(items_table(ROWS)).to_pylist()
    assert [i for i, r in enumerate(reasons) if r] == [1, 4]
    [gate] = validator.finish()
    assert REGEX in gate and "mostly=0.9" in gate


# -- gates ----------------------------------------------------------------------------------


def assert_stopped_before_sending(
    res: SyncResult, report: list[dict], sim, text: str, rejected: dict[int, list[str]] | None = None
) -> None:
    rejected = rejected or {}
    assert sim.stats.save_requests == 0
    for row in report:
        if row["rowNumber"] in rejected:
            # Failed the suite: stays rejected, its own reason first, then the gate's.
            assert row["status"] == "rejected" and row["reasonCode"] == "expectation_failed", row
            assert all(w in row["reason"] for w in rejected[row["rowNumber"]]), row
            assert row["reason"].index(rejected[row["rowNumber"]][0]) < row["reason"].index(text), row
        else:
            assert row["status"] == "not_attempted" and row["reasonCode"] == "gate_failed", row
            assert row["reason"].startswith("not sent: a data-quality gate failed: ") and text in row["reason"], row
    assert res.counts["rejected"] == len(rejected)
    assert res.counts["not_attempted"] == res.counts_by_reason["gate_failed"] == len(report) - len(rejected)
    assert res.to_dict()["counts"]["rejected"] == len(rejected)
    assert res.exit_code == exit_codes.GATE.code and any(text in g for g in res.gate_failures)


def test_failing_table_level_expectation_stops_the_run_before_any_request(tmp_path, sim, creds) -> None:
    suite = write_suite(
        tmp_path / "table.json",
        {
            "name": "t",
            "expectations": [
                {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "viewerId"}},
                {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 100}},
            ],
        },
    )
    res, report, validator = run_sync(tmp_path, creds, ROWS, suite)
    assert_stopped_before_sending(res, report, sim, "expect_table_row_count_to_be_between failed: observed 7")
    assert validator.summary()["validation"]["expectations"][1]["success"] is False


def test_rejected_fraction_above_the_ceiling_stops_the_run(tmp_path, sim, creds, user_suite_file, caplog) -> None:
    caplog.set_level("INFO", logger="polyv_connector")
    res, report, _ = run_sync(tmp_path, creds, ROWS, user_suite_file, max_rejected_fraction=0.05)
    assert_stopped_before_sending(res, report, sim, "max_rejected_fraction", EXPECTED_FAILURES)
    # One consistent story in the log: the suite's own gates passed, the run's ceiling failed.
    assert "0 gate failure(s)" not in caplog.text
    assert "3 item(s) rejected by row expectations; the suite's gates passed" in caplog.text
    gate_lines = [r for r in caplog.records if "data-quality gate failed, nothing is sent" in r.getMessage()]
    assert len(gate_lines) == 1 and gate_lines[0].levelname == "WARNING"
    assert [(p["rowNumber"], p["reasonCode"]) for p in res.problems[:3]] == [
        (0, "gate_failed"),
        (1, "expectation_failed"),
        (2, "expectation_failed"),
    ]
    assert all("customFieldValue" not in p for p in res.problems)


@pytest.mark.slow
def test_whole_table_uniqueness_is_judged_across_chunks(tmp_path, sim, creds) -> None:
    suite = write_suite(
        tmp_path / "unique.json",
        {
            "name": "u",
            "expectations": [{"type": "expect_column_values_to_be_unique", "kwargs": {"column": "viewerId"}}],
        },
    )
    rows = [(f"v{i}", "PAY_STATUS", "paid") for i in range(10)] + [("v1", "VIP_LEVEL", "gold")]
    # Chunks of 4 rows: viewerId v1 appears in the first chunk and in the third.
    res, report, _ = run_sync(tmp_path, creds, rows, suite, read_batch_rows=4)
    assert_stopped_before_sending(
        res, report, sim, "expect_column_values_to_be_unique(viewerId) failed: 2 unexpected values"
    )


def test_expectation_gx_cannot_evaluate_on_the_data_is_a_gate_with_gx_message(tmp_path) -> None:
    suite = write_suite(
        tmp_path / "types.json",
        {
            "name": "t",
            "expectations": [
                {
                    "type": "expect_column_values_to_be_between",  # numbers against a text column
                    "kwargs": {"column": "customFieldValue", "min_value": 0, "max_value": 10},
                },
                {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "viewerId", "regex": r"^v\d+$"}},
            ],
        },
    )
    validator = SuiteValidator.from_file(str(suite))
    for first in range(0, len(ROWS), 3):  # the failing expectation must not stop the others
        reasons = validator.validate_chunk(items_table(ROWS[first : first + 3], first))
        assert [i + first for i, r in enumerate(reasons.to_pylist() if reasons else []) if r] == [
            i for i in (1, 4) if first <= i < first + 3
        ]
    [gate] = validator.finish()
    assert gate.startswith("expect_column_values_to_be_between(customFieldValue) could not be evaluated: ")
    assert "same type" in gate  # GX's own explanation
    assert validator.summary()["validation"]["expectations"][0]["error"]


def test_empty_input_still_meets_table_level_expectations(tmp_path) -> None:
    suite = write_suite(
        tmp_path / "rows.json",
        {"name": "r", "expectations": [{"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}]},
    )
    validator = SuiteValidator.from_file(str(suite))
    [gate] = validator.finish()
    assert "observed 0" in gate


# -- chunking -------------------------------------------------------------------------------


@pytest.mark.slow
def test_chunked_validation_rejects_the_same_rows_as_whole_table_validation(
    tmp_path, creds, user_suite_file, sim
) -> None:
    rows = [(f"v{i}" if i % 7 else f"x{i}", "PAY_STATUS", "paid" if i % 5 else "gold") for i in range(40)]
    results = {}
    for batch_rows in (3, 65_536):
        out = tmp_path / f"chunks-{batch_rows}"
        out.mkdir()
        res, report, validator = run_sync(out, creds, rows, user_suite_file, read_batch_rows=batch_rows)
        stats = [(e["success"], e["unexpectedCount"]) for e in validator.summary()["validation"]["expectations"]]
        results[batch_rows] = (
            [(r["rowNumber"], r["status"], r["reason"]) for r in report],
            stats,
            json.loads(validator.result_json_path.read_text())["results"],
        )
    chunked, whole = results[3], results[65_536]
    assert chunked[0] == whole[0] and chunked[1] == whole[1]
    assert sum(1 for r in chunked[0] if r[1] == "rejected") == 6 + 8 - 2  # x-ids, bad values, both
    # GX's own result (counts, first unexpected values and their row numbers) is identical too.
    assert [r["result"] for r in chunked[2]] == [r["result"] for r in whole[2]]


# -- results --------------------------------------------------------------------------------


def test_validation_json_and_data_docs_are_written_next_to_the_report(tmp_path, user_suite_file) -> None:
    import great_expectations as gx
    from great_expectations.data_context.data_context.context_factory import project_manager

    callers_context = gx.get_context(mode="ephemeral")  # e.g. an Airflow task's own GX project
    validator = SuiteValidator.from_file(str(user_suite_file), report_dir=str(tmp_path / "out" / "run.parquet"))
    validator.validate_chunk(items_table(ROWS))
    validator.finish()
    assert project_manager.get_current_project() is callers_context
    assert validator.result_json_path == tmp_path / "out" / "run.validation.json"
    assert validator.data_docs_path == tmp_path / "out" / "run.data_docs" / "index.html"
    result = json.loads(validator.result_json_path.read_text(encoding="utf-8"), parse_constant=pytest.fail)
    assert result["suite_name"] == "user_suite" and result["success"] is False
    regex = result["results"][0]
    assert regex["expectation_config"]["type"] == "expect_column_values_to_match_regex"
    assert regex["result"]["partial_unexpected_list"] == ["x2", "bad"]
    assert regex["result"]["partial_unexpected_index_list"] == [1, 4]  # source rowNumbers
    # A GX Data Docs site: the index links this run's validation page, rendered by GX.
    page = validator.data_docs_page.relative_to(validator.data_docs_path.parent)
    assert page.parts[:3] == ("validations", "user_suite", "run")
    assert str(page) in validator.data_docs_path.read_text(encoding="utf-8")
    html = validator.data_docs_page.read_text(encoding="utf-8")
    assert "Expectation Validation Result" in html and "user_suite" in html and "x2" in html
    summary = validator.summary()["validation"]
    assert summary["resultJson"] == str(validator.result_json_path)
    assert summary["dataDocs"] == str(validator.data_docs_path)
    assert summary["dataDocsPage"] == str(validator.data_docs_page)


def test_report_directory_names_files_after_the_suite(tmp_path, user_suite_file) -> None:
    validator = SuiteValidator.from_file(str(user_suite_file), report_dir=str(tmp_path))
    validator.finish()
    assert validator.result_json_path == tmp_path / "user_suite.validation.json"
    assert validator.data_docs_path.is_file()


def test_great_expectations_is_not_imported_by_the_package_or_the_cli_help() -> None:
    code = (
        "import sys, contextlib, io\n"
        "import polyv_connector, polyv_connector.expectations, polyv_connector.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    polyv_connector.cli.main(['run', '--help'])\n"
        "print('great_expectations' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_packaged_copy_of_the_bundled_suite_matches_the_repository_one() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    packaged = root / "polyv_connector" / "data" / "viewer_custom_fields.json"
    assert packaged.read_bytes() == (root / "expectations" / "viewer_custom_fields.json").read_bytes()


@pytest.mark.slow
def test_cli_default_suite_prints_where_the_results_are(tmp_path, env, sim, capsys) -> None:
    from polyv_connector.cli import main
    from tests.conftest import write_items

    src = write_items(tmp_path / "in.parquet", [("a", "PAY_STATUS", "1"), ("b", "PAY_STATUS", None)])
    code = main(
        [
            "run",
            "--input",
            str(src),
            "--report",
            str(tmp_path / "r.parquet"),
            "--expectations",
            "default",
            "--max-rejected-fraction",
            "0.6",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"validation result: {tmp_path / 'r.validation.json'}" in out
    assert "data docs: " in out
    assert (tmp_path / "r.validation.json").is_file()
