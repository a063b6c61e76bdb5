"""The partition of an item: md5 of the viewerId's UTF-8 text, first 8 hex digits, mod N."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from polyv_connector.errors import ConfigError
from polyv_connector.fingerprints import viewer_hashes
from polyv_connector.partitioning import (
    MAX_PARTITIONS,
    Slice,
    in_slice,
    parse_slice_name,
    partition_of,
    partitions_of,
)


def test_known_md5_values() -> None:
    # md5("abc") = 900150983cd24fb0d6963f7d28e17f72; PostgreSQL's
    # ('x' || substr(md5('abc'), 1, 8))::bit(32)::bigint gives the same 2416005272.
    assert int(viewer_hashes(pa.array(["abc"]))[0]) == 0x90015098 == 2416005272
    assert partition_of("abc", 4) == 2416005272 % 4 == 0
    assert partition_of("abc", 7) == 2416005272 % 7
    # Non-ASCII text is hashed as UTF-8: md5("张三") = 615db57aa314529aaa0fbe95b3e95bd3.
    assert hashlib.md5("张三".encode()).hexdigest()[:8] == "615db57a"
    assert int(viewer_hashes(pa.array(["张三"]))[0]) == 0x615DB57A
    assert partition_of("张三", 1000) == 0x615DB57A % 1000


def test_vectorised_matches_the_scalar_function_and_is_stable() -> None:
    values = [f"viewer-{i}" for i in range(2000)] + ["张三", "a b", " padded "]
    got = partitions_of(pa.array(values), 5)
    assert got.tolist() == [partition_of(v, 5) for v in values]
    # The same in every call, chunked or not, dictionary-encoded or not.
    chunked = pa.chunked_array([pa.array(values[:700]), pa.array(values[700:])])
    assert partitions_of(chunked, 5).tolist() == got.tolist()
    assert partitions_of(pa.array(values).dictionary_encode(), 5).tolist() == got.tolist()


def test_null_and_blank_viewer_ids_are_in_partition_0() -> None:
    got = partitions_of(pa.array([None, "", "   ", "abc"]), 4)
    assert got.tolist() == [0, 0, 0, partition_of("abc", 4)]
    assert partition_of(None, 4) == partition_of("", 4) == partition_of("  ", 4) == 0
    # Blank is what SQL's TRIM() removes (spaces): a tab-only viewerId is hashed like text.
    assert partition_of("\t", 1000) == 0x5E732A18 % 1000  # md5("\t") = 5e732a18...


def test_every_item_is_in_exactly_one_partition_and_the_spread_is_even() -> None:
    values = pa.array([f"user-{i:07d}" for i in range(40_000)])
    masks = [in_slice(values, Slice(k, 4)) for k in range(4)]
    assert (np.sum(masks, axis=0) == 1).all()
    counts = [int(m.sum()) for m in masks]
    assert all(abs(c - 10_000) < 400 for c in counts), counts  # ~4 standard deviations
    assert in_slice(values, Slice(0, 1)).all()


def test_one_partition_is_the_whole_account() -> None:
    assert partitions_of(pa.array(["a", None]), 1).tolist() == [0, 0]
    assert Slice().whole and not Slice(0, 2).whole


@pytest.mark.parametrize(
    ("k", "n", "setting"),
    [
        (0, 0, "partitions"),
        (0, -1, "partitions"),
        (0, MAX_PARTITIONS + 1, "partitions"),
        (4, 4, "partition"),
        (-1, 4, "partition"),
        (1, 1, "partition"),
    ],
)
def test_slice_validation_names_the_setting(k: int, n: int, setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        Slice(k, n).validate()
    assert info.value.setting == setting


def test_slice_names_round_trip() -> None:
    assert Slice(3, 8).name == "slice-3-of-8"
    assert parse_slice_name("slice-3-of-8") == Slice(3, 8)
    assert parse_slice_name("lock") is None and parse_slice_name("slice-x-of-2") is None
