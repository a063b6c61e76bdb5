"""Table names and identifiers spliced into SQL text."""

from __future__ import annotations

import pytest

from polyv_connector.errors import ConfigError
from polyv_connector.warehouse.identifiers import check_table_name


@pytest.mark.parametrize("name", ["t; DROP TABLE x", "a.b.c.d", "", "t--", "1abc"])
def test_table_names_are_identifiers_only(name):
    with pytest.raises(ConfigError):
        check_table_name(name, "source_table")


@pytest.mark.parametrize("name", ["t", "s.t", "db.s.t", '"Odd Name"', 's."T"', "`m`"])
def test_table_names_accepted(name):
    assert check_table_name(name, "source_table") == name
