"""Rejected values appear in the GX Data Docs pages escaped, never as live HTML."""

from __future__ import annotations

import json

import pytest

from polyv_connector.expectations import SuiteValidator
from tests.expectations.test_expectations import USER_SUITE, items_table, write_suite

SCRIPT = "<script>alert(1)</script>"


@pytest.mark.slow
def test_a_script_viewer_id_is_escaped_in_every_data_docs_page(tmp_path) -> None:
    suite = write_suite(tmp_path / "suite.json", USER_SUITE)
    validator = SuiteValidator.from_file(str(suite), report_dir=str(tmp_path / "out" / "run.parquet"))
    reasons = validator.validate_chunk(
        items_table([(SCRIPT, "PAY_STATUS", "paid"), ("v1", "PAY_STATUS", '"><img src=x onerror=alert(2)>')])
    )
    validator.finish()
    assert reasons is not None and reasons.null_count == 0  # both rows rejected

    pages = sorted((tmp_path / "out" / "run.data_docs").rglob("*.html"))
    assert len(pages) >= 2
    text = "\n".join(p.read_text(encoding="utf-8") for p in pages)
    assert "<script>alert" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(2)&gt;" in text
    assert "&amp;lt;" not in text  # escaped once, not twice
    # The result JSON keeps the values as they were (JSON is not HTML).
    result = json.loads(validator.result_json_path.read_text(encoding="utf-8"))
    unexpected = [v for r in result["results"] for v in r["result"].get("partial_unexpected_list", [])]
    assert SCRIPT in unexpected
