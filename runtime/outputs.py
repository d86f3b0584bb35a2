"""What a handler returned, turned into a reply, the way Nuclio's Python runtime does it.

``str`` is text; ``bytes`` go out as they are; ``dict``/``list`` become JSON;
``(status, body)`` sets the status; a ``nuclio_sdk.Response`` carries status, headers and
content type; and ``nuclio_sdk.ExceptionWithResponse`` raised by a handler becomes its status and
body. Triggers turn a :class:`Reply` into their own wire form (an HTTP response, a Kafka record).

Where sluice differs from Nuclio, on purpose: ``None`` is an empty 200 body (Nuclio sends the text
"None"), and a body that cannot be JSON-encoded is an error, not its ``repr``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson
from nuclio_sdk import ExceptionWithResponse, Response

JSON = "application/json"
TEXT = "text/plain"

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


@dataclass(frozen=True, slots=True)
class Reply:
    """A handler's answer in trigger-neutral form."""

    status: int
    body: bytes
    content_type: str = TEXT
    headers: dict[str, str] = field(default_factory=dict)
    event_id: str | None = None


def dumps(value: Any) -> bytes:
    """JSON-encode a handler's value (numpy arrays and non-string keys included)."""
    return orjson.dumps(value, option=_JSON_OPTIONS)


def is_json(content_type: str | None) -> bool:
    """``application/json`` (with parameters) or any ``+json`` type: bodies to decode."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def encode_body(body: Any) -> tuple[bytes, str | None]:
    """A body as bytes, and the content type it implies (JSON for a dict or list), if any.
    Replies and requests alike: handler outputs, ``Function.invoke``, ``testing.Harness``."""
    if isinstance(body, bytes):
        return body, None
    if isinstance(body, str):
        return body.encode(), None
    if isinstance(body, dict | list):
        return dumps(body), JSON
    if body is None:
        return b"", None
    if isinstance(body, bytearray | memoryview):
        return bytes(body), None
    return str(body).encode(), None


def to_reply(output: Any) -> Reply:
    """Convert one handler return value into a Reply (Nuclio's rules, see module docstring)."""
    if isinstance(output, dict | list):
        return Reply(200, dumps(output), JSON)
    if isinstance(output, str):
        return Reply(200, output.encode(), TEXT)
    if isinstance(output, bytes):
        return Reply(200, output, TEXT)
    if isinstance(output, Response):
        body, implied = encode_body(output.body)
        content_type = JSON if implied == JSON else (output.content_type or TEXT)
        headers = {str(k): str(v) for k, v in (output.headers or {}).items()}
        event_id = str(output.event_id) if output.event_id is not None else None
        return Reply(int(output.status_code), body, content_type, headers, event_id)
    if isinstance(output, tuple) and len(output) == 2:
        status, raw = output
        if isinstance(raw, str):
            return Reply(int(status), raw.encode(), TEXT)
        if isinstance(raw, bytes):
            return Reply(int(status), raw, TEXT)
        return Reply(int(status), dumps(raw), JSON)
    if output is None:
        return Reply(200, b"", TEXT)
    body, implied = encode_body(output)
    return Reply(200, body, implied or TEXT)


def exception_reply(exc: ExceptionWithResponse) -> Reply:
    """A handler's deliberate error response."""
    body, implied = encode_body(exc.body)
    return Reply(int(exc.status_code), body, exc.content_type or implied or TEXT)


def new_error_id() -> str:
    """A short id that ties an error response to its log line."""
    return secrets.token_hex(6)


def error_reply(status: int, message: str, error_id: str | None = None, **extra: Any) -> Reply:
    """sluice's own error body: ``{"error": "...", "error_id": "..."}``."""
    payload: dict[str, Any] = {"error": message}
    if error_id:
        payload["error_id"] = error_id
    payload.update(extra)
    return Reply(status, dumps(payload), JSON)
