from __future__ import annotations

import hashlib
import random
import string

import pytest

from polyv_connector import sign
from polyv_connector.signing import signed_params
from polyv_connector.simulator import signing as sim_signing


def test_fixed_vector_md5() -> None:
    # "s3cret" + "appIdapp1timestamp1700000000000" + "s3cret", MD5, upper-case hex (pinned).
    assert sign({"timestamp": 1700000000000, "appId": "app1"}, "s3cret") == "3AED16998451A07495C0567BF859362A"


def test_fixed_vector_sha256() -> None:
    q = signed_params({"appId": "app1", "timestamp": "1700000000000"}, "s3cret", "SHA256")
    assert q["sign"] == "BFF667FC51574744003B0F4E29C36D473F2EB160AC87C31AAD8AB08277CB2868"


def test_sorting_is_ascii_not_alphabetical() -> None:
    # Upper case sorts before lower case in ASCII: "Z" < "a".
    s = sign({"a": "1", "Z": "2"}, "k")
    assert s == hashlib.md5(b"kZ2a1k").hexdigest().upper()


def test_drops_null_and_empty_and_sign() -> None:
    s = sign({"appId": "x", "empty": "", "none": None, "sign": "OLD"}, "k")
    assert s == hashlib.md5(b"kappIdxk").hexdigest().upper()


def test_utf8_values() -> None:
    s = sign({"name": "已支付"}, "k")
    assert s == hashlib.md5("kname已支付k".encode()).hexdigest().upper()


def test_sha256_includes_signature_method() -> None:
    q = signed_params({"appId": "app1", "timestamp": "1"}, "k", "SHA256")
    assert q["signatureMethod"] == "SHA256"
    raw = b"kappIdapp1signatureMethodSHA256timestamp1k"
    assert q["sign"] == hashlib.sha256(raw).hexdigest().upper()
    assert len(q["sign"]) == 64


def test_rejects_unknown_method_and_empty_secret() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        sign({"a": "1"}, "k", "SHA1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        sign({"a": "1"}, "")


@pytest.mark.parametrize("method", ["MD5", "SHA256"])
def test_random_vectors_match_independent_implementation(method: str) -> None:
    """Our signer and the simulator's (written separately from the docs) agree on random input."""
    rng = random.Random(20261130)
    alphabet = string.ascii_letters + string.digits + "-_.~ 中文😀"
    for _ in range(300):
        params = {
            "".join(rng.choices(string.ascii_letters, k=rng.randint(1, 8))): rng.choice(
                [None, "", "".join(rng.choices(alphabet, k=rng.randint(1, 12)))]
            )
            for _ in range(rng.randint(1, 6))
        }
        secret = "".join(rng.choices(alphabet, k=rng.randint(5, 20)))
        query = signed_params(params, secret, method)  # type: ignore[arg-type]
        assert sim_signing.sign_matches(query, secret, query["sign"]), (params, method)
