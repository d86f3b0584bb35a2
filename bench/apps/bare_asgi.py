"""The floor: a bare ASGI callable (no framework) that parses the JSON body and re-serialises it.

Uses orjson when it is installed (the fastest codec: a fair floor), else the standard library.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

try:
    import orjson

    def echo_json(body: bytes) -> bytes:
        return orjson.dumps(orjson.loads(body))
except ImportError:  # pragma: no cover - orjson is installed in the project's venv

    def echo_json(body: bytes) -> bytes:
        return json.dumps(json.loads(body), separators=(",", ":")).encode()

Message = MutableMapping[str, Any]


async def app(scope: Message, receive: Callable[[], Awaitable[Message]],
              send: Callable[[Message], Awaitable[None]]) -> None:
    if scope["type"] != "http":  # lifespan and websocket: nothing to do
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    out = echo_json(body)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})
