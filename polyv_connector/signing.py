"""POLYV's request signature rule, as a pure function.

The rule (POLYV API docs, §3 of ``shared/polyv-api.md``): take every parameter with a
non-empty value except ``sign``, sort by name in ASCII order, concatenate ``name+value``,
put the appSecret at both ends, hash the UTF-8 bytes (MD5 by default, SHA-256 when
``signatureMethod=SHA256``) and write the digest in upper-case hex.

The signing string contains the secret: it is built here, hashed, and never returned,
logged or put into an exception.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Literal

SignatureMethod = Literal["MD5", "SHA256"]

_HASHES = {"MD5": hashlib.md5, "SHA256": hashlib.sha256}


def sign(
    params: Mapping[str, object | None],
    app_secret: str,
    method: SignatureMethod = "MD5",
) -> str:
    """Return the POLYV ``sign`` value for ``params``.

    ``params`` are the request's query parameters (``sign`` itself is ignored if present).
    Values are turned into text with ``str()``; ``None`` and empty values are dropped, as
    the rule says. ``method`` selects MD5 (default) or SHA-256; when it is ``"SHA256"`` the
    caller must also send ``signatureMethod=SHA256``, and that parameter takes part in the
    signature like any other (include it in ``params``).
    """
    if method not in _HASHES:
        raise ValueError(f"unsupported signature method {method!r}; use 'MD5' or 'SHA256'")
    if not app_secret:
        raise ValueError("app_secret is empty")
    pairs = sorted(
        (name, str(value))
        for name, value in params.items()
        if name != "sign" and value is not None and str(value) != ""
    )
    body = "".join(name + value for name, value in pairs)
    digest = _HASHES[method]((app_secret + body + app_secret).encode("utf-8"))
    return digest.hexdigest().upper()


def signed_params(
    params: Mapping[str, object | None],
    app_secret: str,
    method: SignatureMethod = "MD5",
) -> dict[str, str]:
    """Return ``params`` (non-empty values only, as text) plus ``sign``, ready to send.

    For ``method="SHA256"`` the ``signatureMethod`` parameter is added before signing.
    """
    query = {k: str(v) for k, v in params.items() if v is not None and str(v) != "" and k != "sign"}
    if method == "SHA256":
        query["signatureMethod"] = "SHA256"
    query["sign"] = sign(query, app_secret, method)
    return query
