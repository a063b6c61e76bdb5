"""Great Expectations suites -> row rejections and run gates, for the sync engine.

>>> from polyv_connector.expectations import SuiteValidator
>>> v = SuiteValidator.from_file("expectations/viewer_custom_fields.json",
...                              report_dir="out/report.parquet")  # doctest: +SKIP

Importing this package is cheap: Great Expectations, pandas and pyarrow are imported only
when a suite is loaded or run (``SuiteValidator.from_file`` and later), never at import time.
"""

from __future__ import annotations

from polyv_connector.expectations.suite import bundled_suite_path
from polyv_connector.expectations.validator import SuiteValidator

__all__ = ["SuiteValidator", "bundled_suite_path"]
