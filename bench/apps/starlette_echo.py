"""A minimal Starlette app doing the same JSON echo as the floor (orjson when installed)."""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

try:
    import orjson

    def echo_json(body: bytes) -> bytes:
        return orjson.dumps(orjson.loads(body))
except ImportError:  # pragma: no cover - orjson is installed in the project's venv

    def echo_json(body: bytes) -> bytes:
        return json.dumps(json.loads(body), separators=(",", ":")).encode()


async def echo(request: Request) -> Response:
    return Response(echo_json(await request.body()), media_type="application/json")


app = Starlette(routes=[Route("/", echo, methods=["POST"])])
