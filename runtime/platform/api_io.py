"""Reading the API's requests and writing its answers: JSON in and out, query parameters, and
the one shape of an error (``{"error": ...}`` marked as the platform's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from sluice.errors import SpecError

Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, media_type="application/json")


def error_response(status: int, message: str) -> Response:
    response = json_response({"error": message}, status)
    # tells a client that the platform, not the function, answered (matters for invoke)
    response.headers["X-Sluice-Platform-Error"] = "1"
    return response


async def json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SpecError(f"request body is not valid JSON: {exc}") from None


async def object_body(request: Request) -> dict[str, Any]:
    """A JSON object body; an empty body is an empty object."""
    if not (await request.body()).strip():
        return {}
    payload = await json_body(request)
    if not isinstance(payload, dict):
        raise SpecError("request body must be a JSON object")
    return payload


def int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise SpecError(f"query parameter {name!r} must be a whole number (got {raw!r})")
    return int(raw)
