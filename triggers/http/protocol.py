"""One HTTP/1.1 connection: httptools parses, the server dispatches, replies go out in order.

Requests on one connection are answered in the order they came (pipelining included): while a
request is being handled asynchronously, reading pauses and further parsed requests wait in
``pending``. Sync handlers run inline in ``data_received``, which is the cheapest path there is.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import httptools

from sluice.outputs import Reply, error_reply

from . import wire
from .events import Headers

if TYPE_CHECKING:
    from .server import HttpServer

MAX_HEAD_BYTES = 64 * 1024  # request line plus headers; past it: 431


class Request:
    """A parsed request waiting for its turn on the connection."""

    __slots__ = ("method", "url", "headers", "body", "keep_alive", "started", "refusal")

    def __init__(
        self, method: str, url: str, headers: Headers, body: bytes, keep_alive: bool,
        started: float, refusal: Reply | None = None,
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.started = started
        self.refusal = refusal  # an error to answer in this request's turn, then close


class HttpConnection(asyncio.Protocol):
    """Parses requests from one client socket and writes their responses."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.fd = -1
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.header_list: list[tuple[bytes, bytes]] = []
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.head_size = 0
        self.rejected = False
        self.busy = False  # a request of this connection is being handled
        self.pending: deque[Request] = deque()
        self.closing = False
        self.write_paused = False
        self.resuming = False  # finish() is dispatching the requests that waited
        self.last_active = self.loop.time()

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        server = self.server
        server.connections.add(self)
        if len(server.connections) > server.limits.max_connections or server.draining:
            self.send(error_reply(503, "server is at its connection limit; retry shortly"),
                      keep_alive=False, retry_after=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_active = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.refuse(error_reply(400, "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            if not self.rejected:
                reason = str(exc) or type(exc).__name__
                self.refuse(error_reply(400, f"malformed HTTP request: {reason}"))

    def pause_writing(self) -> None:
        # the client is not reading its responses: stop reading its requests
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.busy:
            self.transport.resume_reading()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.head_size = 0
        self.url = b""
        self.header_list = []
        self.body_parts = []
        self.body_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > MAX_HEAD_BYTES:
            self.reject_head()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_list.append((name, value))
        self.head_size += len(name) + len(value)
        if self.head_size > MAX_HEAD_BYTES:
            self.reject_head()

    def reject_head(self) -> None:
        if not self.rejected:
            self.refuse(error_reply(431, f"request line and headers are over the limit of "
                                         f"{MAX_HEAD_BYTES} bytes"))

    def on_headers_complete(self) -> None:
        limit = self.server.limits.max_request_body_size
        for name, value in self.header_list:
            if name.lower() == b"content-length" and value.isdigit() and int(value) > limit:
                self.reject_too_large(int(value))
                return

    def on_body(self, body: bytes) -> None:
        if self.rejected:
            return
        self.body_size += len(body)
        if self.body_size > self.server.limits.max_request_body_size:
            self.reject_too_large(self.body_size)
            return
        self.body_parts.append(body)

    def on_message_complete(self) -> None:
        if self.rejected or self.closing:
            return
        headers = Headers()
        for name, value in self.header_list:
            key = name.decode("latin-1").title()
            if key in headers:
                dict.__setitem__(headers, key, headers[key] + ", " + value.decode("latin-1"))
            else:
                dict.__setitem__(headers, key, value.decode("latin-1"))
        parts = self.body_parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        request = Request(
            self.parser.get_method().decode("ascii"),
            self.url.decode("latin-1"),
            headers,
            body,
            self.parser.should_keep_alive(),
            self.loop.time(),
        )
        if self.busy:
            self.pending.append(request)
            if self.transport is not None:
                self.transport.pause_reading()
            return
        self.server.dispatch(self, request)

    # -- helpers ---------------------------------------------------------------------------
    def reject_too_large(self, size: int) -> None:
        limit = self.server.limits.max_request_body_size
        self.refuse(
            error_reply(413, f"request body of {size} bytes is over the limit of {limit} bytes"))

    def refuse(self, reply: Reply) -> None:
        """Answer an unusable request and close, after any earlier request's answer."""
        self.rejected = True
        if self.busy or self.pending:  # keep the order: it waits its turn
            self.pending.append(Request("", "", Headers(), b"", False, self.loop.time(), reply))
            if self.transport is not None:
                self.transport.pause_reading()
            return
        self.send(reply, keep_alive=False)

    def begin(self) -> None:
        """A request is now being handled asynchronously; later ones wait (reading pauses
        when one does: pausing on every request costs two epoll updates)."""
        self.busy = True

    def finish(self, reply: Reply, request: Request) -> None:
        """Send the reply of an asynchronously handled request and start the next one."""
        self.busy = False
        self.send(reply, request.keep_alive, head_only=request.method == "HEAD")
        if self.resuming:  # answered at once from the loop below, which goes on from here
            return
        # requests answered at once (metrics, 400, 503) leave the connection idle again: go on
        # until one is in flight or none waits
        self.resuming = True
        try:
            while self.pending and not self.busy and not self.closing:
                self.server.dispatch(self, self.pending.popleft())
        finally:
            self.resuming = False
        if not self.busy and not self.closing and self.transport is not None and (
            not self.write_paused
        ):
            self.transport.resume_reading()

    def send(
        self, reply: Reply, keep_alive: bool, head_only: bool = False, retry_after: bool = False
    ) -> None:
        transport = self.transport
        if transport is None or self.closing:
            return
        keep_alive = keep_alive and not self.server.draining
        if retry_after:
            reply = Reply(reply.status, reply.body, reply.content_type, {"Retry-After": "1"})
        transport.write(wire.encode(reply, keep_alive, head_only))
        if not keep_alive:
            self.closing = True
            transport.close()

    def close_if_idle(self) -> bool:
        if not self.busy and not self.pending and self.transport is not None and (
            self.server.runner.busy_fd != self.fd
        ):
            self.closing = True
            self.transport.close()
            return True
        return False
