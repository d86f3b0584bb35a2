"""HTTP/1.1 response bytes, written directly (no framework on the hot path)."""

from __future__ import annotations

from http import HTTPStatus

from sluice.outputs import Reply

_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        line = f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")
        if len(_STATUS_LINES) < 1000:
            _STATUS_LINES[status] = line
    return line


def _clean(value: object) -> str:
    # a header value with CR/LF in it would let a handler split the response
    text = str(value)
    if "\r" in text or "\n" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    return text


def encode(reply: Reply, keep_alive: bool, head_only: bool = False) -> bytes:
    """The full response: status line, headers, body."""
    parts = [
        status_line(reply.status),
        b"content-type: ",
        reply.content_type.encode("latin-1", "replace"),
        b"\r\ncontent-length: ",
        str(len(reply.body)).encode(),
        b"\r\n",
    ]
    if reply.headers:
        for name, value in reply.headers.items():
            lower = name.lower()
            if lower in ("content-length", "content-type", "transfer-encoding", "connection"):
                if lower == "content-type":
                    parts[2] = _clean(value).encode("latin-1", "replace")
                continue
            parts.append(f"{_clean(name)}: {_clean(value)}\r\n".encode("latin-1", "replace"))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(reply.body)
    return b"".join(parts)
