"""A bare ASGI callable (no framework) around one ``answer(body) -> bytes`` function, on uvicorn
with httptools and uvloop: the shell both uvicorn baselines of the serving benchmark share.

    app = v2_app(lambda body: ...)         # POST /v2/models/mlp/infer -> answer(body)
    serve(app, port)                       # one process, one event loop, until SIGTERM
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from serving_model import PATH

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]
JSON = [(b"content-type", b"application/json")]


def v2_app(answer: Callable[[bytes], bytes]) -> ASGIApp:
    """``POST`` to the model's infer path is answered by ``answer``; anything else is a 404."""

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: nothing to set up
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "POST" and scope["path"] == PATH:
            status, out = 200, answer(body)
        else:
            status, out = 404, b'{"error":"not found"}'
        await send({"type": "http.response.start", "status": status,
                    "headers": [*JSON, (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    return app


def serve(app: ASGIApp, host: str, port: int) -> None:
    uvicorn.run(app, host=host, port=port, http="httptools", loop="uvloop", lifespan="off",
                log_level="warning", access_log=False)
