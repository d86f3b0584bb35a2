"""The platform API's routes for job runs and cron schedules.

``POST /api/functions/{name}/runs`` starts a run (``{"params": {...}}``), ``GET /api/runs`` and
``GET /api/functions/{name}/runs`` list them newest first, ``GET /api/runs/{id}`` shows one,
``POST /api/runs/{id}/cancel`` stops it, ``GET /api/runs/{id}/logs?follow=1`` streams its lines
until it ends. ``GET /api/schedules`` lists cron triggers; ``POST
/api/functions/{name}/schedules/pause`` (or ``resume``) with an optional ``{"trigger": ...}``.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sluice.errors import SpecError

from .api_io import Endpoint, int_param, json_response, object_body
from .local import LocalPlatform
from .states import RunState

TRIGGERS = ("manual", "api")  # what a caller may say started a run (cron is the scheduler's)


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
        payload = await object_body(request)
        unknown = set(payload) - {"params", "trigger"}
        if unknown:
            raise SpecError(f"{sorted(unknown)[0]}: unknown field (allowed: params, trigger)")
        trigger = payload.get("trigger", "api")
        if trigger not in TRIGGERS:
            raise SpecError(f"trigger: must be one of {', '.join(TRIGGERS)} (got {trigger!r})")
        run = platform.run(request.path_params["name"], payload.get("params"), trigger)
        return json_response(run.to_json(), 201)

    async def function_runs(request: Request) -> Response:
        runs = platform.runs(request.path_params["name"], _status(request), _limit(request))
        return json_response([r.to_json() for r in runs])

    async def all_runs(request: Request) -> Response:
        function = request.query_params.get("function") or None
        runs = platform.runs(function, _status(request), _limit(request))
        return json_response([r.to_json() for r in runs])

    async def get_run(request: Request) -> Response:
        return json_response(platform.get_run(request.path_params["run_id"]).to_json())

    async def cancel_run(request: Request) -> Response:
        run = await platform.cancel_run(request.path_params["run_id"])
        return json_response(run.to_json())

    async def run_logs(request: Request) -> Response:
        tail = int_param(request, "tail", 0)
        follow = request.query_params.get("follow", "") in ("1", "true", "yes")
        lines = platform.run_logs(request.path_params["run_id"], tail, follow)
        return StreamingResponse(lines, media_type="application/x-ndjson")

    async def schedules(request: Request) -> Response:
        return json_response([vars(s) for s in platform.schedules()])

    def switch(pause: bool) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            payload = await object_body(request)
            trigger = payload.get("trigger")
            if trigger is not None and not isinstance(trigger, str):
                raise SpecError("trigger: must be the name of a cron trigger")
            name = request.path_params["name"]
            names = (platform.pause if pause else platform.resume)(name, trigger)
            return json_response({"function": name, "triggers": names, "paused": pause})
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
