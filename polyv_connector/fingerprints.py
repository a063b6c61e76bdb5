"""Stable 64-bit hashes of item keys and values (xxh3, fixed seeds).

Keys hash ``<length of viewerId>:`` + ``viewerId`` + ``customFieldId`` (the length prefix keeps
("a\x1fb", "c") and ("a", "b\x1fc") apart whatever the ids hold) twice with different seeds (128 bits) so
that duplicate detection within a run has no practical collision risk; the sync state keeps
the first half. Values hash to one 64-bit fingerprint. These definitions are part of the
state format (``FINGERPRINT_VERSION``): changing them invalidates saved states.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

FINGERPRINT_VERSION = "xxh3_64-v2"
_h = xxhash.xxh3_64_intdigest


def _hash_utf8(array: pa.Array, seed: int) -> np.ndarray:
    # Arrow -> binary -> Python bytes is the cheapest way into xxhash (about 0.1 s per 1M).
    raw = array.cast(pa.binary()).to_pylist()
    if seed:
        return np.fromiter((_h(b or b"", seed) for b in raw), dtype=np.uint64, count=len(raw))
    return np.fromiter(map(_h, (b or b"" for b in raw)), dtype=np.uint64, count=len(raw))


def key_hashes(viewer_ids: pa.Array, field_ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Two independent 64-bit hashes of each (viewerId, customFieldId); nulls hash as empty."""
    viewer = pc.fill_null(viewer_ids, "")
    length = pc.utf8_length(viewer).cast(pa.string())
    keys = pc.binary_join_element_wise(length, pa.scalar(":"), viewer, pc.fill_null(field_ids, ""), "")
    return _hash_utf8(keys, 0), _hash_utf8(keys, 0x9E3779B97F4A7C15)


# A fingerprint no value ever gets: the state records it for items sent but not yet
# confirmed, so that they are never taken for unchanged.
UNCONFIRMED = np.uint64(0)


def value_fingerprints(values: pa.Array) -> np.ndarray:
    """64-bit fingerprint of each value (null hashes as empty: null values are never sent)."""
    fps = _hash_utf8(pc.fill_null(values, ""), 0)
    fps[fps == UNCONFIRMED] = 1  # keep 0 reserved for UNCONFIRMED
    return fps
