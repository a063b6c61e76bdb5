"""Stable 64-bit hashes of item keys and values, in two families.

Keys hash ``<length of viewerId>:`` + ``viewerId`` + ``customFieldId`` (the length prefix keeps
("a\x1fb", "c") and ("a", "b\x1fc") apart whatever the ids hold; the length counts characters).
Each key gets two independent 64-bit hashes (128 bits) so that duplicate detection within a
run has no practical collision risk; the sync state keeps the first. Values hash to one 64-bit
fingerprint. A store declares the family its records use (``hash_family``):

* ``xxh3`` (``FINGERPRINT_VERSION``): xxh3_64 with fixed seeds. Fast; the folder state's.
* ``md5``: computable by a database's own ``md5()``, so the diff can run in the warehouse and
  a warehouse can migrate or check the state in SQL (see
  :class:`polyv_connector.warehouse.dialect.Dialect`, which writes the same in SQL). The
  first key hash's high 32 bits are the viewer's partition hash (:func:`viewer_hashes`: the
  first 8 hex digits of MD5(viewerId)), its low 32 bits the first 32 bits of the MD5 of the
  key text; the second key hash is the next 64 bits of that MD5. The value fingerprint is the
  first 64 bits of MD5(value). Hashes are big-endian readings of the digest, as the hex
  digits read.

These definitions are part of the state format: changing them invalidates saved states.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from itertools import repeat
from operator import methodcaller
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from polyv_connector.arrowconv import scalar, to_numpy

FINGERPRINT_VERSION = "xxh3_64-v2"
HashFamily = Literal["xxh3", "md5"]
HASH_FAMILIES: tuple[HashFamily, ...] = ("xxh3", "md5")

_h = xxhash.xxh3_64_intdigest
_md5: Callable[[bytes], Any]
try:
    # CPython's own MD5 (HACL*): 0.27 us per short text against 0.45 us through hashlib's
    # OpenSSL objects, whose per-object setup dominates at key lengths (the plan hashes 1M keys).
    _md5 = importlib.import_module("_md5").md5
except ImportError:  # a build without it (e.g. FIPS-only): the same digests through OpenSSL
    _md5 = hashlib.md5
_digest = methodcaller("digest")


def _md5_digests(array: pa.Array) -> np.ndarray:
    """Each string's whole MD5 digest as 4 big-endian 32-bit words (one row each; null: of
    ``''``). map() over C callables, no generator frame or slicing per item: the plan's hot loop."""
    raw = array.cast(pa.binary()).fill_null(scalar(b"")).to_pylist()
    joined = b"".join(map(_digest, map(_md5, raw)))
    return np.frombuffer(joined, dtype=">u4").reshape(-1, 4)


def _as_bytes(array: pa.Array) -> list[bytes]:
    """Each string as Python bytes (null: empty): Arrow -> binary -> Python bytes is the
    cheapest way into xxhash (about 0.13 s per 1M), so a key hashed twice is converted once."""
    return array.cast(pa.binary()).fill_null(scalar(b"")).to_pylist()  # type: ignore[no-any-return]


def _hash_utf8(raw: list[bytes], seed: int) -> np.ndarray:
    # map() over the list, no generator: a third faster per item (the plan's hot loop).
    hashed = map(_h, raw, repeat(seed)) if seed else map(_h, raw)
    return np.fromiter(hashed, dtype=np.uint64, count=len(raw))


def _md5_prefix(array: pa.Array, start: int, stop: int) -> np.ndarray:
    """Big-endian bytes ``start:stop`` of each string's MD5 as unsigned integers (null: empty)."""
    width = stop - start
    if width not in (4, 8) or start % 4:
        raise ValueError("width must be 4 or 8 bytes, from a multiple of 4")
    words = _md5_digests(array)[:, start // 4 : stop // 4].astype(np.uint64)
    if width == 4:
        return words[:, 0].astype(np.uint32)
    return (words[:, 0] << np.uint64(32)) | words[:, 1]


def _key_text(viewer_ids: pa.Array, field_ids: pa.Array) -> pa.Array:
    viewer = pc.fill_null(viewer_ids, scalar(""))
    length = pc.utf8_length(viewer).cast(pa.string())
    return pc.binary_join_element_wise(length, scalar(":"), viewer, pc.fill_null(field_ids, scalar("")), scalar(""))


def viewer_hashes(viewer_ids: pa.Array) -> np.ndarray:
    """The 32-bit partition hash of each viewerId: its MD5's first 8 hex digits (null: of ``''``).

    Each distinct viewerId is hashed once (a wide source repeats it for every field).
    """
    if isinstance(viewer_ids, pa.ChunkedArray):
        viewer_ids = viewer_ids.combine_chunks()
    encoded = pc.fill_null(viewer_ids, scalar("")).dictionary_encode()
    per_distinct = _md5_prefix(encoded.dictionary, 0, 4)
    hashes: np.ndarray = per_distinct[to_numpy(encoded.indices)]
    return hashes


def partitions_of(viewer_ids: pa.Array, partitions: int) -> np.ndarray:
    """The partition (0 <= p < ``partitions``) of each viewerId: :func:`viewer_hashes` modulo
    ``partitions``; a null or blank (whitespace only) viewerId is in partition 0."""
    if isinstance(viewer_ids, pa.ChunkedArray):
        viewer_ids = viewer_ids.combine_chunks()
    part = (viewer_hashes(viewer_ids) % np.uint32(partitions)).astype(np.int64)
    blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(viewer_ids), scalar("")), scalar(True))
    part[to_numpy(blank)] = 0
    return part


def key_hashes(viewer_ids: pa.Array, field_ids: pa.Array, family: HashFamily = "xxh3") -> tuple[np.ndarray, np.ndarray]:
    """Two independent 64-bit hashes of each (viewerId, customFieldId); nulls hash as empty."""
    keys = _key_text(viewer_ids, field_ids)
    if family == "xxh3":
        raw = _as_bytes(keys)
        return _hash_utf8(raw, 0), _hash_utf8(raw, 0x9E3779B97F4A7C15)
    if family != "md5":
        raise ValueError(f"unknown hash family {family!r}")
    parts = _md5_digests(keys)[:, :3].astype(np.uint64)
    a = (viewer_hashes(viewer_ids).astype(np.uint64) << np.uint64(32)) | parts[:, 0]
    b = (parts[:, 1] << np.uint64(32)) | parts[:, 2]
    return a, b


def first_key_hashes(viewer_ids: pa.Array, field_ids: pa.Array, family: HashFamily = "xxh3") -> np.ndarray:
    """The first of :func:`key_hashes` (the state's key), without the second where that saves work."""
    if family == "xxh3":
        return _hash_utf8(_as_bytes(_key_text(viewer_ids, field_ids)), 0)
    return key_hashes(viewer_ids, field_ids, family)[0]  # md5: both come from one digest


# A fingerprint no value ever gets: the state records it for items sent but not yet
# confirmed, so that they are never taken for unchanged.
UNCONFIRMED = np.uint64(0)


def value_fingerprints(values: pa.Array, family: HashFamily = "xxh3") -> np.ndarray:
    """64-bit fingerprint of each value (null hashes as empty: null values are never sent)."""
    filled = pc.fill_null(values, scalar(""))
    if family == "xxh3":
        fps = _hash_utf8(_as_bytes(filled), 0)
    elif family == "md5":
        fps = _md5_prefix(filled, 0, 8)
    else:
        raise ValueError(f"unknown hash family {family!r}")
    fps[fps == UNCONFIRMED] = 1  # keep 0 reserved for UNCONFIRMED
    return fps


class ValueFingerprinter:
    """:func:`value_fingerprints` of a run's chunks, each distinct value hashed once.

    Viewer attributes repeat (a payment status, a tier): hashing a chunk's distinct values and
    spreading them was 5x faster on 200,000 values of about 1,000 distinct ones. Where values
    are mostly distinct the dictionary only costs, so after a chunk with more distinct values
    than half its items the rest of the run hashes each value.
    """

    def __init__(self, family: HashFamily = "xxh3") -> None:
        self.family = family
        self.by_distinct = True

    def __call__(self, values: pa.Array) -> np.ndarray:
        if not self.by_distinct:
            return value_fingerprints(values, self.family)
        encoded = pc.fill_null(values, scalar("")).dictionary_encode()
        if 2 * len(encoded.dictionary) > len(values):
            self.by_distinct = False
        fps: np.ndarray = value_fingerprints(encoded.dictionary, self.family)[to_numpy(encoded.indices)]
        return fps


def md5_value_fingerprint(md5_hex: str) -> int:
    """The ``md5`` family's fingerprint of a value whose MD5 hex digits are ``md5_hex``."""
    return int(md5_hex[:16], 16) or 1


def viewer_partition_of_key(keys: np.ndarray) -> np.ndarray:
    """The viewer partition hash held in the high 32 bits of ``md5`` family keys (uint64)."""
    return (np.asarray(keys, np.uint64) >> np.uint64(32)).astype(np.uint32)
