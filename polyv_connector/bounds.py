"""How long a text that comes from the data or from POLYV may be where people read it.

A viewerId is whatever the source holds, and a reason may quote POLYV's own error text: both
reach the summary's ``problems`` (XCom), the run page, task logs and the failure notifier's
alert. Each of those shows them cut to the length below, so a hostile or broken row cannot
fill an XCom, a chat message or a log line (the Parquet report keeps the full viewerId; its
``reason`` column is cut to :data:`REASON_CHARS` too).

A leaf module: no imports beyond the standard library.
"""

from __future__ import annotations

from typing import Final

#: Characters of a viewerId shown in ``problems``, the run page, logs and alerts.
VIEWER_ID_CHARS: Final = 128
#: Characters of a reason (ours or POLYV's message) shown in the same places and kept in the
#: report's ``reason`` column.
REASON_CHARS: Final = 500
#: Characters of an exception's text quoted in an alert (the task log has it whole).
ERROR_CHARS: Final = 2000
#: Characters of a source query quoted in a task's log when it starts.
QUERY_CHARS: Final = 20_000
#: What ends a cut text: says that something was left out.
CUT_MARK: Final = "…"


def cut(text: object, limit: int) -> str:
    """``text`` as a string of at most ``limit`` characters, ending in :data:`CUT_MARK` when it
    was longer (``None`` is the empty string)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    shown = "" if text is None else str(text)
    if len(shown) <= limit:
        return shown
    return shown[: limit - len(CUT_MARK)] + CUT_MARK
