"""The HTTP plumbing of the simulator: a threading server and its request handler.

The handler only frames requests and answers; every decision is the ``dispatch`` callable's
(:meth:`PolyvSimulator._handle`). Answers go out in a single write, keep-alive is on, and
nothing logged ever contains the query string (it holds the sign).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from polyv_connector.simulator.contract import (
    ApiError,
    ApiRequest,
    Response,
    error_response,
    server_error_response,
)

_LOG = logging.getLogger(__name__)

#: Bodies larger than this are refused (and the connection closed) instead of read.
_MAX_BODY_BYTES = 64 * 1024 * 1024
#: An idle keep-alive connection is closed after this long, so a long CLI run leaks no threads.
_IDLE_TIMEOUT_S = 120.0
_SIGN_RE = re.compile(r"(sign=)[^&\s]*", re.IGNORECASE)


class SimHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that remembers its connections so stop() can close them."""

    daemon_threads = True
    request_queue_size = 128  # parallel sync workers connect at once

    def __init__(
        self,
        address: tuple[str, int],
        *,
        dispatch: Callable[[ApiRequest], Response],
        on_connect: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.dispatch = dispatch
        self.on_connect = on_connect
        self.clock = clock  # the simulator's own (possibly shifted) clock, for the Date header
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse-DNS lookup that can hang
        # for seconds on hosts without DNS; the simulator has no use for the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def track(self, connection: socket.socket) -> None:
        """Remember an open connection."""
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        """Forget a connection that is closing."""
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut down every open connection, which ends its handler thread."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that vanish mid-request are normal here; keep stderr clean.
        _LOG.debug("connection from %s ended with an error", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """Turns HTTP requests into :class:`ApiRequest` values and writes the answers."""

    protocol_version = "HTTP/1.1"  # keep-alive, so pooled client sessions reuse connections
    server_version = "PolyvSimulator/1.0"
    sys_version = ""
    timeout = _IDLE_TIMEOUT_S
    server: SimHTTPServer

    def setup(self) -> None:
        super().setup()
        # The answer goes out in one write; NODELAY also rules out Nagle/delayed-ACK stalls.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)
        self.server.on_connect()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def do_GET(self) -> None:
        """Serve a GET request."""
        self._serve()

    def do_POST(self) -> None:
        """Serve a POST request."""
        self._serve()

    def do_PUT(self) -> None:
        """Serve a PUT request (answered 404/405 like POLYV)."""
        self._serve()

    def do_DELETE(self) -> None:
        """Serve a DELETE request (answered 404/405 like POLYV)."""
        self._serve()

    def do_PATCH(self) -> None:
        """Serve a PATCH request (answered 404/405 like POLYV)."""
        self._serve()

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            # The framing is unusable, so the connection cannot be reused either.
            self.close_connection = True
            self._write(error_response(ApiError(400, "invalid request body")))
            return
        split = urlsplit(self.path)
        request = ApiRequest(
            method=self.command,
            path=split.path,
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            content_type=self.headers.get("Content-Type", ""),
            body=body,
            client_ip=str(self.client_address[0]),
        )
        try:
            response = self.server.dispatch(request)
        except Exception:
            # A bug in the simulator must look like a server failure, not like a reset fault.
            _LOG.exception("simulator failed to answer %s %s", self.command, split.path)
            response = server_error_response()
        if response.action == "reset":
            self._reset_connection()
        else:
            self._write(response)

    def _read_body(self) -> bytes | None:
        """Read exactly the request body; None when its framing is invalid or too large."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            return None
        if not 0 <= length <= _MAX_BODY_BYTES:
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                size = int(self.rfile.readline(1024).split(b";", 1)[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                break
            total += size
            if total > _MAX_BODY_BYTES:
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)  # the CRLF after the chunk
        while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)

    def _write(self, response: Response) -> None:
        # Status line, headers and body in a single write: one TCP segment train per answer.
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = ""
        head = (
            f"HTTP/1.1 {response.status} {phrase}\r\n"
            f"Server: {self.server_version}\r\n"
            f"Date: {self.date_time_string(self.server.clock())}\r\n"
            f"Content-Type: {response.content_type}\r\n"
            f"Content-Length: {len(response.body)}\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in response.headers)
            + f"Connection: {'close' if self.close_connection else 'keep-alive'}\r\n\r\n"
        )
        self.wfile.write(head.encode("latin-1") + response.body)
        # The path only: the query holds the sign, which must never reach a log.
        _LOG.debug("%s %s -> %d", self.command, urlsplit(self.path).path, response.status)

    def _reset_connection(self) -> None:
        """Close abruptly: SO_LINGER (1, 0) makes close() send RST instead of FIN."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # drop the makefile reference so close() really closes
            self.connection.close()
        except OSError:
            pass  # the peer is gone already: the effect is the same

    def log_message(self, format: str, *args: Any) -> None:
        """Route http.server's own messages to DEBUG, with any ``sign=`` value redacted."""
        _LOG.debug("%s %s", self.client_address[0], _SIGN_RE.sub(r"\1<redacted>", format % args))
