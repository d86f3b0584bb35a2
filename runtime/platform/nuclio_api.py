"""The part of the Nuclio dashboard's REST API that nuclio-jupyter calls, under ``/nuclio/api``,
so that notebooks written for Nuclio deploy to sluice unchanged::

    %nuclio deploy -n scorer -p demo -d http://sluice:<token>@127.0.0.1:8075/nuclio
    nuclio.deploy_file("scorer.ipynb", dashboard_url="http://...", project="demo")

(``sluice info`` prints the URL.) The prefix keeps it apart from sluice's own ``/api``, whose
``/api/functions`` has other shapes.

Routes: ``GET``/``POST /projects`` (GET answers a dict keyed by project name), ``GET
/projects/{name}``, ``DELETE /projects`` (body ``{"metadata": {"name": ...}}``); ``GET
/functions`` (keyed by name; the ``x-nuclio-project-name`` header filters), ``GET
/functions/{name}``, ``POST /functions``, ``PUT /functions/{name}``, ``DELETE /functions``
(body ``{"metadata": {"name": ...}}``); ``GET /external_ip_addresses``.

A write answers 202 at once and the deploy goes on in the background, as Nuclio's does: the
function reads ``status.state`` ``building`` until it is ``ready`` or ``error``, with
``status.message`` saying why (a bad spec, a handler that does not import, a failed build
command) and ``status.logs`` holding the deploy's log lines since it began.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluice.errors import NotFoundError, SluiceError, SpecError
from sluice.nuclio_config import from_nuclio, to_nuclio
from sluice.spec import parse_spec

from .api_io import Endpoint, json_body, json_response
from .base import FunctionStatus
from .local import LocalPlatform
from .states import FunctionState

log = logging.getLogger("sluice.nuclio_api")

PREFIX = "/nuclio/api"
PROJECT_LABEL = "nuclio.io/project-name"
PROJECT_HEADER = "x-nuclio-project-name"
DEFAULT_PROJECT = "default"
_PROJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# sluice's function states as Nuclio's dashboard names them (a degraded function still serves)
_STATES = {FunctionState.DEPLOYING: "building", FunctionState.READY: "ready",
           FunctionState.DEGRADED: "ready", FunctionState.ERROR: "error",
           FunctionState.DRAINING: "terminating"}
_LOG_LINES = 200  # of the function's log, searched for the lines of the current deploy


@dataclass
class _Deploy:
    """A deploy that came in through this API: its config as sent, and how it went."""

    config: dict[str, Any]
    project: str
    started: float
    state: str = "building"  # building, error, or done (then the platform's state counts)
    message: str = ""
    ended: float = 0.0  # when it failed: a later change on the platform (a deploy through
    # sluice's own API) then tells more than this failure


class NuclioDashboard:
    """The dashboard's routes over one platform."""

    def __init__(self, platform: LocalPlatform) -> None:
        self.platform = platform
        self.deploys: dict[str, _Deploy] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self, guarded: Callable[[Endpoint], Endpoint]) -> list[Route]:
        return [
            Route(f"{PREFIX}/projects", guarded(self.list_projects), methods=["GET"]),
            Route(f"{PREFIX}/projects", guarded(self.create_project), methods=["POST"]),
            Route(f"{PREFIX}/projects", guarded(self.delete_project), methods=["DELETE"]),
            Route(f"{PREFIX}/projects/{{name}}", guarded(self.get_project), methods=["GET"]),
            Route(f"{PREFIX}/functions", guarded(self.list_functions), methods=["GET"]),
            Route(f"{PREFIX}/functions", guarded(self.create_function), methods=["POST"]),
            Route(f"{PREFIX}/functions", guarded(self.delete_function), methods=["DELETE"]),
            Route(f"{PREFIX}/functions/{{name}}", guarded(self.get_function), methods=["GET"]),
            Route(f"{PREFIX}/functions/{{name}}", guarded(self.update_function),
                  methods=["PUT"]),
            Route(f"{PREFIX}/external_ip_addresses", guarded(self.external_addresses),
                  methods=["GET"]),
        ]

    # -- projects ------------------------------------------------------------------------------
    def _projects(self) -> dict[str, str]:
        """Every project: the ones created here, the ones functions name, and ``default``."""
        known = {name: description
                 for name, (description, _) in self.platform.store.projects().items()}
        for fn in self.platform.functions.values():
            known.setdefault(fn.spec.labels.get(PROJECT_LABEL, DEFAULT_PROJECT), "")
        for deploy in self.deploys.values():
            known.setdefault(deploy.project, "")
        known.setdefault(DEFAULT_PROJECT, "")
        return known

    async def list_projects(self, request: Request) -> Response:
        return json_response({name: _project(name, description)
                              for name, description in sorted(self._projects().items())})

    async def get_project(self, request: Request) -> Response:
        name = request.path_params["name"]
        projects = self._projects()
        if name not in projects:
            raise NotFoundError(f"no project named {name!r}")
        return json_response(_project(name, projects[name]))

    async def create_project(self, request: Request) -> Response:
        name, body = _named(await json_body(request), "project")
        if not _PROJECT_NAME.match(name):
            raise SpecError(f"metadata.name: project name {name!r} must be lowercase letters, "
                            "digits and '-', starting and ending with a letter or digit (at most "
                            "63 characters)")
        if name in self.platform.store.projects():
            return json_response({"error": f"project {name!r} already exists"}, 409)
        spec = body.get("spec")
        description = str(spec.get("description", "")) if isinstance(spec, dict) else ""
        self.platform.store.put_project(name, description)
        return json_response(_project(name, description), 201)

    async def delete_project(self, request: Request) -> Response:
        name, _ = _named(await json_body(request), "project")
        members = sorted(fn.spec.name for fn in self.platform.functions.values()
                         if fn.spec.labels.get(PROJECT_LABEL, DEFAULT_PROJECT) == name)
        if members:
            return json_response({"error": f"project {name!r} still has functions: "
                                           f"{', '.join(members)}; delete them first"}, 409)
        self.platform.store.delete_project(name)
        return Response(status_code=204)

    # -- functions -----------------------------------------------------------------------------
    async def list_functions(self, request: Request) -> Response:
        wanted = request.headers.get(PROJECT_HEADER)
        names = sorted(set(self.platform.functions) | set(self.deploys))
        documents = {}
        for name in names:
            with contextlib.suppress(NotFoundError):  # not (or no longer) there
                document = await self._document(name, request)
                labels = document["metadata"]["labels"]
                if not wanted or labels.get(PROJECT_LABEL) == wanted:
                    documents[name] = document
        return json_response(documents)

    async def get_function(self, request: Request) -> Response:
        return json_response(await self._document(request.path_params["name"], request))

    async def create_function(self, request: Request) -> Response:
        config = await _config(request)
        name = config["metadata"]["name"]
        if name in self.platform.functions or self._building(name):
            return json_response({"error": f"function {name!r} already exists; update it with "
                                           f"PUT {PREFIX}/functions/{name}"}, 409)
        return self._accept(config, request)

    async def update_function(self, request: Request) -> Response:
        config = await _config(request)
        name = request.path_params["name"]
        if config["metadata"]["name"] != name:
            raise SpecError(f"metadata.name is {config['metadata']['name']!r} but the URL names "
                            f"function {name!r}")
        return self._accept(config, request)

    async def delete_function(self, request: Request) -> Response:
        name, _ = _named(await json_body(request), "function")
        known = self.deploys.pop(name, None)
        if name in self.platform.functions:
            await self.platform.delete(name)
        elif known is None:
            raise NotFoundError(f"no function named {name!r}")
        return Response(status_code=204)

    async def external_addresses(self, request: Request) -> Response:
        return json_response({"externalIPAddresses": {"addresses": [_host(request)]}})

    # -- deploying -------------------------------------------------------------------------------
    def _building(self, name: str) -> bool:
        deploy = self.deploys.get(name)
        return deploy is not None and deploy.state == "building"

    def _accept(self, config: dict[str, Any], request: Request) -> Response:
        """Record the deploy as building and start it; a spec that cannot be a sluice function
        fails it at once (the client reads the reason from ``status.message``)."""
        metadata = config["metadata"]
        name = metadata["name"]
        labels = metadata.setdefault("labels", {})
        if not isinstance(labels, dict):
            raise SpecError("metadata.labels: must be a mapping of names to values")
        project = str(request.headers.get(PROJECT_HEADER) or labels.get(PROJECT_LABEL)
                      or DEFAULT_PROJECT)
        labels[PROJECT_LABEL] = project
        config.setdefault("apiVersion", "nuclio.io/v1beta1")  # the dashboard's own clients
        config.pop("status", None)  # what a client read back; never an input
        deploy = _Deploy(config, project, time.time())
        self.deploys[name] = deploy
        try:
            spec = parse_spec(from_nuclio(config, source="the function config"), prefix="spec.")
        except SpecError as exc:
            deploy.state, deploy.message = "error", f"the function config is invalid: {exc}"
            deploy.ended = time.time()
            log.info("nuclio deploy of %s refused: %s", name, exc)
        else:
            task = asyncio.get_running_loop().create_task(self._deploy(deploy, spec))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # nuclio-jupyter reads this body only into a failed deploy's message ("cannot deploy
        # <body>"), after it printed status.message: name what was being deployed
        return Response(f"function {name!r} in project {project!r}", 202,
                        media_type="text/plain")

    async def _deploy(self, deploy: _Deploy, spec: Any) -> None:
        try:
            await self.platform.deploy(spec)
        except SluiceError as exc:
            deploy.state, deploy.message = "error", str(exc)
        except Exception as exc:  # never a deploy stuck in building
            log.exception("deploying %s from the Nuclio API failed", spec.name)
            deploy.state, deploy.message = "error", f"{type(exc).__name__}: {exc}"
        else:
            deploy.state = "done"
        deploy.ended = time.time()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- reading back --------------------------------------------------------------------------
    async def _document(self, name: str, request: Request) -> dict[str, Any]:
        """The function as Nuclio's dashboard shows it: metadata, spec and status."""
        deploy = self.deploys.get(name)
        status: FunctionStatus | None = None
        with contextlib.suppress(NotFoundError):  # not (or no longer) there
            status = await self.platform.get(name)
        if status is None and (deploy is None or deploy.state == "done"):
            self.deploys.pop(name, None)  # deployed here, deleted since through sluice's API
            raise NotFoundError(f"no function named {name!r}")
        if deploy is not None and deploy.state == "error" and status is not None and (
                status.updated > deploy.ended):
            deploy.state = "done"  # the platform changed the function since this failed
        if deploy is not None and deploy.state != "done":  # building, or failed
            config = {"metadata": deploy.config["metadata"], "spec": deploy.config.get("spec", {})}
            state, message = deploy.state, deploy.message
        else:
            assert status is not None
            config = to_nuclio(status.spec)
            state, message = _STATES[status.state], status.message
        metadata = dict(config["metadata"])
        labels = metadata["labels"] = dict(metadata.get("labels") or {})
        labels.setdefault(PROJECT_LABEL, DEFAULT_PROJECT)
        port = _port(status.endpoint) if status is not None and state == "ready" else 0
        urls = [f"{_host(request)}:{port}"] if port else []
        logs = await self._logs(name, deploy)
        if state == "error" and message and not any(e["level"] == "error" for e in logs):
            logs.append({"name": "deployer", "time": time.time() * 1000, "level": "error",
                         "message": message})
        return {"metadata": metadata, "spec": config["spec"],
                "status": {"state": state, "message": message, "httpPort": port, "logs": logs,
                           "internalInvocationUrls": urls, "externalInvocationUrls": urls}}

    async def _logs(self, name: str, deploy: _Deploy | None) -> list[dict[str, Any]]:
        """The function's log lines since the deploy began (all of its last ones when it did
        not come through here), as Nuclio's deploy log entries."""
        since = deploy.started if deploy is not None else 0.0
        entries = []
        with contextlib.suppress(NotFoundError):  # not (or no longer) there
            async for line in self.platform.logs(name, _LOG_LINES):
                entry = _entry(line)
                if entry is not None and entry["time"] >= since * 1000:
                    entries.append(entry)
        return entries


def _entry(line: bytes) -> dict[str, Any] | None:
    try:
        raw = orjson.loads(line)
        when = datetime.fromisoformat(raw["time"]).timestamp() * 1000
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return {"name": raw.get("function", "deployer"), "time": when,
            "level": str(raw.get("level", "info")), "message": str(raw.get("message", ""))}


def _project(name: str, description: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"description": description}}


def _named(body: Any, what: str) -> tuple[str, dict[str, Any]]:
    """``metadata.name`` of a Nuclio object body."""
    metadata = body.get("metadata") if isinstance(body, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        raise SpecError(f"the request body must be a {what} object with metadata.name, e.g. "
                        f'{{"metadata": {{"name": "demo"}}}}')
    return name, body


async def _config(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    _named(body, "function")
    if not isinstance(body.get("spec", {}), dict):
        raise SpecError("spec: must be a mapping")
    return dict(body)


def _host(request: Request) -> str:
    """The address functions are reached at: the one the client reached the platform by."""
    return request.url.hostname or "127.0.0.1"


def _port(endpoint: str | None) -> int:
    return (urlsplit(endpoint).port or 0) if endpoint else 0
