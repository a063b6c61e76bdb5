"""The documented cut lengths: what a cut text looks like."""

from __future__ import annotations

import pytest

from polyv_connector.bounds import CUT_MARK, REASON_CHARS, VIEWER_ID_CHARS, cut


def test_short_texts_are_left_alone() -> None:
    assert cut("viewer-1", VIEWER_ID_CHARS) == "viewer-1"
    assert cut("x" * VIEWER_ID_CHARS, VIEWER_ID_CHARS) == "x" * VIEWER_ID_CHARS
    assert cut(None, 5) == "" and cut(12345, 5) == "12345"


def test_long_texts_end_in_the_mark_within_the_limit() -> None:
    shown = cut("r" * 10_000, REASON_CHARS)
    assert len(shown) == REASON_CHARS and shown.endswith(CUT_MARK) and shown.startswith("r" * (REASON_CHARS - 1))
    assert cut("abcdef", 3) == "ab" + CUT_MARK


def test_a_limit_below_one_is_a_mistake() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        cut("x", 0)
