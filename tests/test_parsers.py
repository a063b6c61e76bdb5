"""``polyv_connector.parsers``: raw setting values (flags, rendered templates, extras) → typed."""

from __future__ import annotations

import pytest

from polyv_connector import parsers
from polyv_connector.errors import ConfigError


@pytest.mark.parametrize(("raw", "value"), [(True, True), ("True", True), (" on ", True), ("0", False), ("", False)])
def test_a_flag_may_arrive_as_rendered_text(raw, value) -> None:
    assert parsers.flag(raw, "dry_run") is value


@pytest.mark.parametrize("raw", ['["a", "b"]', "['a', 'b']", "a, b", ["a", "b"], ("a", "b")])
def test_names_from_a_list_its_json_its_repr_or_commas(raw) -> None:
    assert parsers.names(raw, "allowed") == ("a", "b")


@pytest.mark.parametrize(
    ("parse", "raw"),
    [
        (parsers.integer, "1.5"),
        (parsers.integer, True),
        (parsers.number, "inf"),
        (parsers.fraction, "2"),
        (parsers.signature_method, "sha1"),
        (parsers.names, "[__import__('os')]"),
        (parsers.parse_prefixes, "not json"),
        (parsers.parse_prefixes, ["", "/data"]),
        (parsers.field_map, ["PAY_STATUS"]),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting(parse, raw) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(raw, "the_label")
    assert raised.value.setting == "the_label"


def test_blank_means_not_given() -> None:
    assert parsers.text("  ", "x") is None
    assert parsers.parse_prefixes(" ", "x") is None
    assert parsers.parameters([], "x") is None
    assert parsers.fraction("none", "x") is None
