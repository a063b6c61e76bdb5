"""Items: source rows turned into (rowNumber, viewerId, customFieldId, customFieldValue), checked.

- :mod:`~polyv_connector.items.text`: every Arrow type turned into the text POLYV receives.
- :mod:`~polyv_connector.items.convert`: record batches into items (long or wide form).
- :mod:`~polyv_connector.items.checks`: the built-in row checks, vectorised, with reason codes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["to_items"]


def __getattr__(name: str) -> Any:
    # Lazily: the package's modules import pyarrow.
    if name == "to_items":
        from polyv_connector.items.convert import to_items

        return to_items
    raise AttributeError(name)
