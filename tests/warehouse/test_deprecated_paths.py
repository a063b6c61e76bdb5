"""The old import paths of the warehouse modules still work for one release, with a warning."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        ("polyv_connector.dbapi", "polyv_connector.warehouse.dbapi", ["Target", "resolve", "copy_into", "insert_rows"]),
        ("polyv_connector.airflow.report_table", "polyv_connector.warehouse.report_table", ["SqlReportTable"]),
        ("polyv_connector.airflow.state_table", "polyv_connector.warehouse.state_table", ["SqlStateTable"]),
    ],
)
def test_an_old_path_warns_and_gives_the_same_objects(old, new, names, monkeypatch) -> None:
    # The warning fires when the shim module runs: make this import the first one.
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=rf"{old} moved to {new}; the old path goes in 0\.3"):
        shim = importlib.import_module(old)
    moved = importlib.import_module(new)
    for name in names:
        assert getattr(shim, name) is getattr(moved, name)
