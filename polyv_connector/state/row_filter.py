"""Which keys may have a row in a state table: a bit per hash bucket, never a wrong "no".

A run holds the lock on its account's state from before it loads the state until it ends, so
while it runs the rows of the account are the ones it loaded plus the ones it wrote. A pre-mark
deletes the rows of the keys about to be sent; a key that has none needs no ``DELETE``. On a
first run none has one, and the deletes (a thousand keys a statement, 1M keys a run) were a
third of the state's writes. :class:`RowFilter` remembers the loaded keys and those written
since as bits of a fixed bitmap: a key whose bit is clear has no row; a key whose bit is set may
have one (another key of the bucket set it) and is deleted as before.
"""

from __future__ import annotations

import numpy as np

#: Bits of the filter (4 MB): at 1M keys about 3 % of the keys without a row are deleted anyway.
BITS = 1 << 25
_MASK = np.uint64(BITS - 1)
_SHIFT = np.uint64(32)


def _buckets(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The byte and the bit of each key (both halves of the 64-bit key mixed in)."""
    k = np.asarray(keys, np.uint64)
    bucket = (k ^ (k >> _SHIFT)) & _MASK
    return (bucket >> np.uint64(3)).astype(np.intp), (bucket & np.uint64(7)).astype(np.uint8)


class RowFilter:
    """The keys that may have a row: those added, and a few others (never fewer)."""

    def __init__(self, keys: np.ndarray | None = None) -> None:
        self._bits = np.zeros(BITS // 8, np.uint8)
        if keys is not None:
            self.add(keys)

    def add(self, keys: np.ndarray) -> None:
        """Keys that have (or may have) a row from now on."""
        byte, bit = _buckets(keys)
        np.bitwise_or.at(self._bits, byte, np.left_shift(np.uint8(1), bit))

    def may_have_row(self, keys: np.ndarray) -> np.ndarray:
        """A boolean mask over ``keys``: False only for keys that surely have no row."""
        byte, bit = _buckets(keys)
        mask: np.ndarray = ((self._bits[byte] >> bit) & 1).astype(bool)
        return mask
