"""Make the connection list's Test button work for ``polyv`` connections on Airflow 3.3.

Airflow 3.3.2's UI posts ``port: 0`` when it tests a connection whose port is empty; the API
server then takes the stored connection (port NULL) and the request (port 0) for two different
endpoints and answers *Bad Request* before any provider is asked. For a ``polyv`` connection a
port of 0 means nothing (the hook ignores it, like no port), so this ASGI middleware, mounted at
the API server's root by the plugin, drops ``port: 0`` from that one request
for that one connection type by leaving the port out (so a stored port of 0 or none both
match). Every other request passes untouched; the API server still checks
everything else (host, credentials, permissions) as it would.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TEST_PATH = "/api/v2/connections/test"
CONN_TYPE = "polyv"
#: A connection-test body is a few hundred bytes; never buffer more than this.
MAX_BODY = 1 << 20


def normalized_body(body: bytes) -> bytes:
    """``body`` without its ``port: 0`` when it tests a ``polyv`` connection (else as is)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict) or data.get("conn_type") != CONN_TYPE or data.get("port") != 0:
        return body
    del data["port"]  # not given: the API server compares no port, whatever is stored
    return json.dumps(data).encode()


class PolyvConnectionTestMiddleware:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope.get("type") != "http" or scope.get("method") != "POST" or not path.endswith(TEST_PATH):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client went away: let the app see it
                await self.app(scope, _replay(messages, receive), send)
                return
            size += len(message.get("body", b""))
            if size > MAX_BODY:  # not a test body we know: pass it on as it came
                await self.app(scope, _replay(messages, receive), send)
                return
            if not message.get("more_body", False):
                break
        body = normalized_body(b"".join(m.get("body", b"") for m in messages))
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        request = {"type": "http.request", "body": body, "more_body": False}
        await self.app({**scope, "headers": headers}, _replay([request], receive), send)


def _replay(messages: list[Message], then: Receive) -> Receive:
    """A ``receive`` that yields ``messages`` first, then defers to ``then`` (the rest of the
    body, or the wait for a disconnect)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return await then()

    return receive
