"""The POLYV signature rule, re-implemented inside the simulator on purpose.

The simulator must not import the client's signer: if both sides shared one function, a bug
in it would sign and verify consistently and never show up in a test.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

#: The value of ``signatureMethod`` that selects SHA-256 instead of MD5.
SHA256_METHOD = "SHA256"


def expected_sign(params: Mapping[str, str], app_secret: str) -> str:
    """Return the ``sign`` POLYV expects for the query ``params``.

    Every parameter except ``sign`` with a non-empty value is sorted by name (ASCII order),
    concatenated as ``name1value1name2value2...``, wrapped in the appSecret on both sides and
    hashed over its UTF-8 bytes: MD5, or SHA-256 when ``signatureMethod=SHA256`` (which then
    takes part in the string like any other parameter). The digest is upper-case hex.
    """
    pairs = sorted((name, value) for name, value in params.items() if name != "sign" and value)
    joined = "".join(name + value for name, value in pairs)
    data = (app_secret + joined + app_secret).encode("utf-8")
    use_sha256 = params.get("signatureMethod") == SHA256_METHOD
    digest = hashlib.sha256(data) if use_sha256 else hashlib.md5(data)
    return digest.hexdigest().upper()


def sign_matches(params: Mapping[str, str], app_secret: str, provided: str) -> bool:
    """Compare ``provided`` with the expected sign in constant time (case-sensitive)."""
    expected = expected_sign(params, app_secret).encode("ascii")
    # Encode first: compare_digest refuses non-ASCII str, and a client may send anything.
    return hmac.compare_digest(expected, provided.encode("utf-8"))
