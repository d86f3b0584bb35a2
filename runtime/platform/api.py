"""The platform's REST API (Starlette): the CLI, the Python client and notebooks talk to this.

Reads are open when the API listens on the loopback only (the default; beyond it, every call
but ``/api/health`` needs the token). Anything that changes state or runs code (every method
but GET/HEAD, and invoke with any method) needs the token from ``$SLUICE_HOME/token``: as
``Authorization: Bearer <token>``, as the password of HTTP Basic auth, or as the session cookie
nuclio-jupyter sends for ``V3IO_ACCESS_KEY`` (``session=j:{"sid": "<token>"}``). Errors are
``{"error": "..."}`` with a fitting status; a traceback is never the interface. The Nuclio
dashboard's API for notebooks lives under ``/nuclio/api`` (nuclio_api.py).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
from typing import Any

from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sluice.errors import SluiceError, SpecError
from sluice.spec import parse_spec

from . import metrics
from .api_io import Endpoint, error_response, int_param, json_body, json_response
from .base import InvokeRequest
from .local import LocalPlatform
from .nuclio_api import NuclioDashboard
from .runs_api import run_routes

log = logging.getLogger("sluice.api")

_HOP_HEADERS = {"host", "content-length", "connection", "authorization", "transfer-encoding",
                "keep-alive", "accept-encoding"}


def create_app(platform: LocalPlatform, token: str, info: dict[str, Any],
               open_reads: bool = True) -> Starlette:
    """The API bound to one platform; ``info`` is what ``GET /api/info`` reports. Reads need
    the token too unless ``open_reads`` (the API listens on the loopback only)."""

    def guarded(endpoint: Endpoint, always: bool = False, public: bool = False) -> Endpoint:
        async def wrapper(request: Request) -> Response:
            method = request.method
            try:
                needs_token = always or method not in ("GET", "HEAD") or (
                    not open_reads and not public)
                if needs_token and not _authorized(request, token):
                    response = error_response(
                        401, "missing or wrong API token: send 'Authorization: Bearer <token>' "
                        "(the CLI reads it from $SLUICE_HOME/token)")
                else:
                    response = await endpoint(request)
            except SluiceError as exc:
                response = error_response(exc.http_status, str(exc))
            except Exception as exc:  # the API never answers with a traceback
                log.exception("internal error on %s %s", method, request.url.path)
                response = error_response(500, f"internal error: {type(exc).__name__}: {exc}")
            metrics.API_REQUESTS.labels(method, str(response.status_code)).inc()
            return response

        return wrapper

    async def get_info(request: Request) -> Response:
        return json_response({**info, "functions": len(platform.functions)})

    async def health(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def list_functions(request: Request) -> Response:
        return json_response([s.to_json() for s in await platform.list()])

    async def deploy(request: Request) -> Response:
        payload = await json_body(request)
        spec_data = payload.get("spec") if isinstance(payload, dict) else None
        if isinstance(payload, dict) and ("metadata" in payload or "apiVersion" in payload):
            raise SpecError(_NUCLIO_HINT.format(base=str(request.base_url).rstrip("/")))
        if spec_data is None:
            raise SpecError("request body must be {\"spec\": {...}}")
        status = await platform.deploy(parse_spec(spec_data, prefix="spec."))
        return json_response(status.to_json(), 200)

    async def get_function(request: Request) -> Response:
        return json_response((await platform.get(request.path_params["name"])).to_json())

    async def delete_function(request: Request) -> Response:
        name = request.path_params["name"]
        await platform.delete(name)
        return json_response({"deleted": name})

    async def scale(request: Request) -> Response:
        payload = await json_body(request)
        if not isinstance(payload, dict):
            raise SpecError("request body must be {\"replicas\": N, \"workers\": M} "
                            "(or \"max_replicas\": N, the autoscaling bound)")
        for key in ("replicas", "workers", "max_replicas"):
            value = payload.get(key)
            if value is not None and (not isinstance(value, int) or not 1 <= value <= 64):
                raise SpecError(f"{key}: must be a whole number from 1 to 64 (got {value!r})")
        status = await platform.scale(request.path_params["name"], payload.get("replicas"),
                                      payload.get("workers"), payload.get("max_replicas"))
        return json_response(status.to_json())

    async def invoke(request: Request) -> Response:
        name = request.path_params["name"]
        path = "/" + request.path_params.get("path", "")
        if request.url.query:
            path += "?" + request.url.query
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        result = await platform.invoke(name, InvokeRequest(request.method, path, headers,
                                                           await request.body()))
        out_headers = {k: v for k, v in result.headers.items() if k.lower() not in _HOP_HEADERS}
        return Response(result.body, result.status, headers=out_headers)

    async def logs(request: Request) -> Response:
        name = request.path_params["name"]
        tail = int_param(request, "tail", 100)
        follow = request.query_params.get("follow", "") in ("1", "true", "yes")
        lines = platform.logs(name, tail, follow)  # raises NotFoundError before streaming
        return StreamingResponse(lines, media_type="application/x-ndjson")

    async def prometheus(request: Request) -> Response:
        await platform.list()  # refresh the per-state gauge
        return Response(generate_latest(metrics.REGISTRY), media_type="text/plain; version=0.0.4")

    async def nuclio_elsewhere(request: Request) -> Response:
        return error_response(404, _NUCLIO_HINT.format(base=str(request.base_url).rstrip("/")))

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
    routes = [
        Route("/api/info", guarded(get_info), methods=["GET"]),
        Route("/api/health", guarded(health, public=True), methods=["GET"]),  # for probes
        Route("/api/functions", guarded(list_functions), methods=["GET"]),
        Route("/api/functions", guarded(deploy), methods=["POST"]),
        Route("/api/functions/{name}", guarded(get_function), methods=["GET"]),
        Route("/api/functions/{name}", guarded(delete_function), methods=["DELETE"]),
        Route("/api/functions/{name}/scale", guarded(scale), methods=["POST"]),
        Route("/api/functions/{name}/invoke", guarded(invoke, always=True), methods=methods),
        Route("/api/functions/{name}/invoke/{path:path}", guarded(invoke, always=True),
              methods=methods),
        Route("/api/functions/{name}/logs", guarded(logs), methods=["GET"]),
        Route("/metrics", guarded(prometheus), methods=["GET"]),
        *run_routes(platform, guarded),
        *NuclioDashboard(platform).routes(guarded),
        Route("/api/projects", nuclio_elsewhere, methods=["GET", "POST"]),
    ]
    return Starlette(routes=routes)


_NUCLIO_HINT = ("this is sluice's own API; Nuclio clients (nuclio-jupyter's %nuclio deploy, "
                "nuclio.deploy_file) take the dashboard URL {base}/nuclio")
_SESSION = re.compile(r'j:\{\s*"sid"\s*:\s*"([^"]*)"\s*\}')


def _authorized(request: Request, token: str) -> bool:
    return any(given and hmac.compare_digest(given.encode(), token.encode())
               for given in _offered_tokens(request))


def _offered_tokens(request: Request) -> list[str]:
    """What the request offers as the token: a bearer token, a Basic auth password, or the
    session cookie nuclio-jupyter sends for ``V3IO_ACCESS_KEY``."""
    offered = []
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        offered.append(value.strip())
    elif scheme.lower() == "basic":
        try:
            credentials = base64.b64decode(value.strip(), validate=True).decode()
            offered.append(credentials.partition(":")[2])
        except (binascii.Error, UnicodeDecodeError):
            pass
    session = _SESSION.fullmatch(request.cookies.get("session", "").strip())
    if session is not None:
        offered.append(session.group(1))
    return offered
