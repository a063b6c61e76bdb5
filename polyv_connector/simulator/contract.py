"""The POLYV API contract as pure functions: request checks, body validation, response bodies.

Nothing here touches sockets, locks or the clock; :mod:`.server` wires these into HTTP.
Error descriptions are POLYV's own wording (see ``shared/polyv-api.md`` §4) and never echo a
parameter value, so neither the sign nor anything derived from the appSecret can leak.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

SAVE_PATH = "/live/v4/user/custom-field/viewer-value/save"
LIST_PATH = "/live/v4/user/custom-field/list"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
HTML_CONTENT_TYPE = "text/html; charset=utf-8"

#: POLYV accepts a timestamp up to three minutes away from its own clock.
TIMESTAMP_TOLERANCE_S = 180.0
#: POLYV's v4 list APIs cap a page at 1000 items.
MAX_PAGE_SIZE = 1000
REQUIRED_PARAMS = ("appId", "timestamp", "sign")

#: ``error.code`` values POLYV documents; other errors repeat the HTTP status.
APP_NOT_FOUND_CODE = 20001
PARAM_VALIDATE_CODE = 20002

_TIMESTAMP_RE = re.compile(r"[0-9]{13}")  # ASCII digits only: str.isdigit() admits others

GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
UNAVAILABLE_HTML = (
    b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    b"<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
PORTAL_HTML = (
    b"<!DOCTYPE html><html><head><title>Network login</title></head>"
    b"<body><h1>Please sign in to continue</h1></body></html>"
)

Action = Literal["answer", "reset"]


@dataclass(frozen=True)
class Response:
    """What to send back: an HTTP answer, or ``action="reset"`` to drop the connection.

    ``headers`` are sent after the standard ones (``Retry-After``, say).
    """

    status: int
    body: bytes = b""
    content_type: str = JSON_CONTENT_TYPE
    action: Action = "answer"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ApiRequest:
    """What the contract needs from one HTTP request (the query decoded, the body read)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: bytes
    client_ip: str


class ApiError(Exception):
    """A v4 error answer: HTTP ``status``, ``error.code`` and ``error.desc``."""

    def __init__(self, status: int, desc: str, error_code: int | None = None) -> None:
        super().__init__(desc)
        self.status = status
        self.desc = desc
        self.error_code = status if error_code is None else error_code


class BlockedError(ApiError):
    """The client IP is blocked by the rate limit."""

    def __init__(self, status: int) -> None:
        super().__init__(status, "qps exceeds number of calls")


def new_request_id() -> str:
    """Return a fresh 32-hex-digit requestId."""
    return uuid.uuid4().hex


def json_response(status: int, payload: object) -> Response:
    """Serialise ``payload`` as compact UTF-8 JSON (non-ASCII kept as is)."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(status=status, body=body)


def success_response(data: object) -> Response:
    """POLYV's v4 success envelope around ``data``."""
    return json_response(
        200,
        {
            "code": 200,
            "status": "success",
            "requestId": new_request_id(),
            "data": data,
            "success": True,
        },
    )


def error_response(error: ApiError) -> Response:
    """POLYV's v4 error envelope: ``status`` is ``error`` for 4xx and ``fail`` for 5xx."""
    return json_response(
        error.status,
        {
            "code": error.status,
            "status": "fail" if error.status >= 500 else "error",
            "requestId": new_request_id(),
            "error": {"code": error.error_code, "desc": error.desc},
            "success": False,
        },
    )


def server_error_response() -> Response:
    """The 500 answer POLYV gives for a server-side failure."""
    return error_response(ApiError(500, "undefined error"))


def check_required_params(query: Mapping[str, str]) -> None:
    """Raise 400 ``param should not be empty: <name>`` for the first missing parameter."""
    for name in REQUIRED_PARAMS:
        if not query.get(name):
            raise ApiError(400, f"param should not be empty: {name}")


def check_timestamp(timestamp: str, now_s: float) -> None:
    """Raise 400 ``invalid timestamp.`` unless ``timestamp`` is a 13-digit ms epoch near now."""
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        raise ApiError(400, "invalid timestamp.")
    if abs(int(timestamp) / 1000.0 - now_s) > TIMESTAMP_TOLERANCE_S:
        raise ApiError(400, "invalid timestamp.")


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _is_valid_item(item: object, fields: Collection[str]) -> bool:
    if type(item) is not dict:
        return False
    viewer_id = item.get("viewerId")
    field_id = item.get("customFieldId")
    value = item.get("customFieldValue")
    # Exact type checks: a JSON number or bool must not pass for a string.
    return (
        type(viewer_id) is str
        and viewer_id != ""
        and type(field_id) is str
        and field_id in fields
        and type(value) is str
    )


def parse_save_body(
    content_type: str,
    body: bytes,
    *,
    fields: Collection[str],
    max_items: int,
    poison_values: Collection[str],
    poison_message: str = "param validate error",
) -> list[dict[str, Any]]:
    """Validate a save request body and return its items, or raise :class:`ApiError`.

    The answer is for the whole request, as POLYV's is: one bad object rejects them all. A
    request holding a poison value is refused with ``poison_message``.
    """
    if _media_type(content_type) != "application/json":
        # POLYV documents Content-Type: application/json; a client that forgets it must notice.
        raise ApiError(415, "content type not supported")
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "json format error") from exc
    if not isinstance(payload, list):
        raise ApiError(400, "json format error")
    if not payload:
        raise ApiError(400, "param should not be empty: body")
    if len(payload) > max_items:
        raise ApiError(400, "param length is incorrect: body")
    for item in payload:
        if not _is_valid_item(item, fields):
            raise ApiError(400, "param validate error", PARAM_VALIDATE_CODE)
        if item["customFieldValue"] in poison_values:
            raise ApiError(400, poison_message, PARAM_VALIDATE_CODE)
    return payload


def _positive_int(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name, "")
    if raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise ApiError(400, "param validate error", PARAM_VALIDATE_CODE)
    return int(raw)


def parse_paging(query: Mapping[str, str]) -> tuple[int, int]:
    """Return ``(pageNumber, pageSize)`` from the query (defaults 1 and 10)."""
    page_number = _positive_int(query, "pageNumber", 1)
    page_size = _positive_int(query, "pageSize", 10)
    if page_size > MAX_PAGE_SIZE:
        raise ApiError(400, "param validate error", PARAM_VALIDATE_CODE)
    return page_number, page_size


def field_name(field_id: str) -> str:
    """A readable display name for a customFieldId (``PAY_STATUS`` → ``Pay Status``)."""
    return field_id.replace("_", " ").title()


def field_page(fields: list[str], page_number: int, page_size: int) -> dict[str, Any]:
    """The ``data`` of a custom-field list answer for one page."""
    start = (page_number - 1) * page_size
    contents = [
        {"customFieldId": fid, "customFieldName": field_name(fid), "customFieldType": "text"}
        for fid in fields[start : start + page_size]
    ]
    return {
        "pageNumber": page_number,
        "pageSize": page_size,
        "totalPages": math.ceil(len(fields) / page_size),
        "totalItems": len(fields),
        "contents": contents,
    }
