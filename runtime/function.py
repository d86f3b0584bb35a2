"""Functions from Python: describe one, deploy it, call it (what a notebook user writes).

    >>> from sluice import Function, HttpTrigger
    >>> fn = Function("echo", "examples/echo.py", triggers={"web": HttpTrigger()}, workers=2)
    >>> spec = fn.spec()
    >>> spec.handler, spec.workers, spec.triggers["web"].kind
    ('echo:handler', 2, 'http')

``fn.deploy()`` sends it to the running platform (``sluice up``); ``fn.invoke(...)`` calls it;
a job (``kind="job"``) is started with ``fn.run({"epochs": 5})``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .client import Client
from .outputs import encode_body
from .packaging import spec_from_path
from .spec import FunctionSpec, HttpTrigger, parse_spec


class Function:
    """A function to deploy: a handler file (or an importable module) plus its settings."""

    def __init__(
        self,
        name: str,
        source: str | Path | None = None,
        handler: str = "handler",
        *,
        kind: str = "http",
        triggers: dict[str, HttpTrigger | dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
        workers: int = 1,
        replicas: int = 1,
        timeout: float | None = None,
        retries: int | None = None,
        params: dict[str, Any] | None = None,
        version: str | None = None,
        description: str = "",
    ) -> None:
        data: dict[str, Any] = {}
        if source is not None:
            data = spec_from_path(Path(source), name=name, handler=handler)
        else:
            data = {"name": name, "handler": handler}
        data.update(kind=kind, workers=workers, replicas={"min": replicas},
                    description=description)
        # unset, the platform's default for the kind applies (a minute; an hour for a job)
        for key, value in (("timeout", timeout), ("retries", retries), ("params", params)):
            if value is not None:
                data[key] = value
        if env:
            data["env"] = dict(env)
        if version:
            data["version"] = version
        if triggers:
            data["triggers"] = {
                key: t.model_dump(mode="json") if isinstance(t, HttpTrigger) else dict(t)
                for key, t in triggers.items()
            }
        self._data = data
        self.name = name

    @classmethod
    def from_yaml(cls, path: str | Path) -> Function:
        """A sluice spec YAML or a Nuclio function.yaml (its handler file beside it)."""
        data = spec_from_path(Path(path))
        fn = cls.__new__(cls)
        fn._data, fn.name = data, str(data["name"])
        return fn

    def spec(self) -> FunctionSpec:
        """The validated spec (raises SpecError naming the bad field)."""
        return parse_spec(self._data)

    def deploy(self, client: Client | None = None) -> dict[str, Any]:
        """Deploy (or redeploy) on the running platform; returns its status."""
        self.spec()  # fail here, with the field named, before any network call
        return (client or Client()).deploy(self._data)

    def invoke(
        self,
        body: Any = b"",
        *,
        method: str = "POST",
        path: str = "/",
        headers: dict[str, str] | None = None,
        client: Client | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Call the deployed function; dict/list bodies are sent as JSON."""
        all_headers = dict(headers or {})
        raw, implied = encode_body(body)
        if implied:
            all_headers.setdefault("Content-Type", implied)
        return (client or Client()).invoke(self.name, raw, method, path, all_headers)

    def run(self, params: dict[str, Any] | None = None, *, wait: bool = True,
            client: Client | None = None) -> dict[str, Any]:
        """Start a run of this job function; with ``wait``, return its record once it has
        finished (status, outputs), else at once (pending)."""
        client = client or Client()
        run = client.run(self.name, params or {})
        return client.wait_run(run["id"]) if wait else run

    def delete(self, client: Client | None = None) -> None:
        (client or Client()).delete(self.name)
