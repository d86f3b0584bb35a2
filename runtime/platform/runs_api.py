"""The platform API's routes for job runs and cron schedules.

``POST /api/functions/{name}/runs`` starts a run (``{"params": {...}}``), ``GET /api/runs`` and
``GET /api/functions/{name}/runs`` list them newest first, ``GET /api/runs/{id}`` shows one,
``POST /api/runs/{id}/cancel`` stops it, ``GET /api/runs/{id}/logs?follow=1`` streams its lines
until it ends. ``GET /api/schedules`` lists cron triggers; ``POST
/api/functions/{name}/schedules/pause`` (or ``resume``) with an optional ``{"trigger": ...}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sluice.errors import SpecError

from .local import LocalPlatform
from .states import RunState

Endpoint = Callable[[Request], Awaitable[Response]]
TRIGGERS = ("manual", "api")  # what a caller may say started a run (cron is the scheduler's)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, media_type="application/json")


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SpecError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise SpecError("request body must be a JSON object")
    return payload


def _status(request: Request) -> RunState | None:
    raw = request.query_params.get("status")
    if not raw:
        return None
    try:
        return RunState(raw)
    except ValueError:
        raise SpecError(f"status {raw!r} is not a run status (one of "
                        f"{', '.join(s.value for s in RunState)})") from None


def _limit(request: Request, default: int = 50) -> int:
    raw = request.query_params.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
        raise SpecError(f"limit must be a whole number from 1 to 10000 (got {raw!r})")
    return int(raw)


def run_routes(platform: LocalPlatform, guarded: Callable[[Endpoint], Endpoint]) -> list[Route]:
    async def start_run(request: Request) -> Response:
        payload = await _body(request)
        unknown = set(payload) - {"params", "trigger"}
        if unknown:
            raise SpecError(f"{sorted(unknown)[0]}: unknown field (allowed: params, trigger)")
        trigger = payload.get("trigger", "api")
        if trigger not in TRIGGERS:
            raise SpecError(f"trigger: must be one of {', '.join(TRIGGERS)} (got {trigger!r})")
        run = platform.run(request.path_params["name"], payload.get("params"), trigger)
        return _json(run.to_json(), 201)

    async def function_runs(request: Request) -> Response:
        runs = platform.runs(request.path_params["name"], _status(request), _limit(request))
        return _json([r.to_json() for r in runs])

    async def all_runs(request: Request) -> Response:
        function = request.query_params.get("function") or None
        runs = platform.runs(function, _status(request), _limit(request))
        return _json([r.to_json() for r in runs])

    async def get_run(request: Request) -> Response:
        return _json(platform.get_run(request.path_params["run_id"]).to_json())

    async def cancel_run(request: Request) -> Response:
        return _json((await platform.cancel_run(request.path_params["run_id"])).to_json())

    async def run_logs(request: Request) -> Response:
        tail = request.query_params.get("tail", "0")
        if not tail.isdigit():
            raise SpecError(f"query parameter 'tail' must be a whole number (got {tail!r})")
        follow = request.query_params.get("follow", "") in ("1", "true", "yes")
        lines = platform.run_logs(request.path_params["run_id"], int(tail), follow)
        return StreamingResponse(lines, media_type="application/x-ndjson")

    async def schedules(request: Request) -> Response:
        return _json([vars(s) for s in platform.schedules()])

    def switch(pause: bool) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            payload = await _body(request)
            trigger = payload.get("trigger")
            if trigger is not None and not isinstance(trigger, str):
                raise SpecError("trigger: must be the name of a cron trigger")
            name = request.path_params["name"]
            names = (platform.pause if pause else platform.resume)(name, trigger)
            return _json({"function": name, "triggers": names, "paused": pause})
        return endpoint

    return [
        Route("/api/functions/{name}/runs", guarded(start_run), methods=["POST"]),
        Route("/api/functions/{name}/runs", guarded(function_runs), methods=["GET"]),
        Route("/api/functions/{name}/schedules/pause", guarded(switch(True)), methods=["POST"]),
        Route("/api/functions/{name}/schedules/resume", guarded(switch(False)),
              methods=["POST"]),
        Route("/api/runs", guarded(all_runs), methods=["GET"]),
        Route("/api/runs/{run_id}", guarded(get_run), methods=["GET"]),
        Route("/api/runs/{run_id}/cancel", guarded(cancel_run), methods=["POST"]),
        Route("/api/runs/{run_id}/logs", guarded(run_logs), methods=["GET"]),
        Route("/api/schedules", guarded(schedules), methods=["GET"]),
    ]
