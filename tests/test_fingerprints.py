"""The two hash families: the md5 one reads as the hex digits a database's md5() gives."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from polyv_connector import fingerprints
from polyv_connector.fingerprints import (
    UNCONFIRMED,
    key_hashes,
    partitions_of,
    value_fingerprints,
    viewer_hashes,
    viewer_partition_of_key,
)


def _hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def test_md5_keys_hold_the_viewer_partition_hash_then_the_key_texts_digest() -> None:
    viewers, fields = ["u1", "中文", "😀"], ["F", "G", "H"]
    a, b = key_hashes(pa.array(viewers), pa.array(fields), "md5")
    for i, (v, f) in enumerate(zip(viewers, fields, strict=True)):
        key_text = f"{len(v)}:{v}{f}"  # characters, not bytes: "😀" counts 1
        assert int(a[i]) == int(_hex(v)[:8] + _hex(key_text)[:8], 16)
        assert int(b[i]) == int(_hex(key_text)[8:24], 16)
    assert list(viewer_partition_of_key(a)) == [int(_hex(v)[:8], 16) for v in viewers]


def test_md5_value_fingerprints_are_the_digests_first_64_bits() -> None:
    values = ["abc", "ABC", ""]
    fps = value_fingerprints(pa.array(values), "md5")
    assert [int(x) for x in fps] == [int(_hex(v)[:16], 16) for v in values]
    assert UNCONFIRMED not in fps


@pytest.mark.parametrize("md5", ["builtin", "hashlib"])
def test_md5_hashes_are_the_same_through_cpythons_md5_or_hashlibs(md5, monkeypatch) -> None:
    # A Python built without its own _md5 (FIPS-only builds) hashes through hashlib's OpenSSL:
    # the saved states' hashes must not depend on which.
    if md5 == "hashlib":
        monkeypatch.setattr(fingerprints, "_md5", hashlib.md5)
    viewers, fields, values = ["u1", "中文", None], ["F", None, "H"], ["abc", None, ""]
    a, b = key_hashes(pa.array(viewers), pa.array(fields), "md5")
    for i, (v, f) in enumerate(zip(viewers, fields, strict=True)):
        key_text = f"{len(v or '')}:{v or ''}{f or ''}"
        assert int(a[i]) == int(_hex(v or "")[:8] + _hex(key_text)[:8], 16)
        assert int(b[i]) == int(_hex(key_text)[8:24], 16)
    fps = value_fingerprints(pa.array(values), "md5")
    assert [int(x) for x in fps] == [int(_hex(v or "")[:16], 16) for v in values]


def test_the_families_differ_and_each_is_stable() -> None:
    v, f = pa.array(["u1"]), pa.array(["F"])
    assert key_hashes(v, f, "md5")[0][0] != key_hashes(v, f, "xxh3")[0][0]
    assert key_hashes(v, f, "md5")[0][0] == key_hashes(v, f, "md5")[0][0]
    with pytest.raises(ValueError, match="unknown hash family"):
        key_hashes(v, f, "sha1")  # type: ignore[arg-type]


def test_partitions_hash_each_viewer_and_put_blank_ones_in_partition_0() -> None:
    viewers = pa.array(["abc", None, "", "  ", "中文", "abc"])
    assert int(viewer_hashes(viewers)[0]) == int(_hex("abc")[:8], 16)
    parts = partitions_of(viewers, 7)
    assert list(parts) == [int(_hex("abc")[:8], 16) % 7, 0, 0, 0, int(_hex("中文")[:8], 16) % 7, parts[0]]
    assert parts.dtype == np.int64


@pytest.mark.parametrize("family", ["xxh3", "md5"])
def test_first_key_hashes_are_the_first_of_key_hashes(family) -> None:
    from polyv_connector.fingerprints import first_key_hashes, key_hashes

    viewers, fields = pa.array(["v1", None, "v:1", "v1"]), pa.array(["F", "F", "", None])
    assert first_key_hashes(viewers, fields, family).tolist() == key_hashes(viewers, fields, family)[0].tolist()


@pytest.mark.parametrize("family", ["xxh3", "md5"])
def test_fingerprinting_each_distinct_value_once_gives_every_values_own(family) -> None:
    from polyv_connector.fingerprints import ValueFingerprinter, value_fingerprints

    fingerprint = ValueFingerprinter(family)
    repeated = pa.array(["paid", None, "paid", "", "未付", "paid"] * 10)
    assert fingerprint(repeated).tolist() == value_fingerprints(repeated, family).tolist()
    assert fingerprint.by_distinct
    distinct = pa.array([f"v{i}" for i in range(9)] + [None])
    assert fingerprint(distinct).tolist() == value_fingerprints(distinct, family).tolist()
    assert not fingerprint.by_distinct  # mostly distinct: the rest of the run hashes each value
    assert fingerprint(repeated).tolist() == value_fingerprints(repeated, family).tolist()
    assert fingerprint(pa.array([], pa.string())).tolist() == []
