"""The Platform interface: what every control plane offers (local today; Ray and Kubernetes
plug in behind the same methods later), and the records it returns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from sluice.spec import FunctionSpec

from .states import FunctionState


@dataclass(frozen=True)
class AutoscaleStatus:
    """A function that autoscales: its bounds, target, and load now (in workers' worth of
    work: the sum of its workers' latest reports, see :mod:`sluice.platform.autoscale`)."""

    min: int
    max: int
    target: float
    load: float


@dataclass(frozen=True)
class FunctionStatus:
    """What ``sluice get`` shows for one function. ``replicas``: running now;
    ``desired_replicas``: what the autoscaler wants now (the same when it does not scale)."""

    name: str
    kind: str
    state: FunctionState
    generation: int
    version: str | None
    replicas: int
    workers: int
    workers_ready: int
    triggers: list[str]
    endpoint: str | None
    message: str = ""
    restarts: int = 0
    created: float = 0.0
    updated: float = 0.0
    spec: dict[str, Any] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)  # "topic/partition" -> messages behind
    pids: list[int] = field(default_factory=list)  # the worker processes now
    runs_active: int = 0  # a job's runs now running or waiting to retry
    desired_replicas: int = 0
    autoscale: AutoscaleStatus | None = None  # None: the replicas are fixed

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = str(self.state)
        spec = data.pop("spec")
        return {"name": self.name, "spec": spec, "status": data}


@dataclass(frozen=True)
class InvokeRequest:
    method: str = "POST"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class InvokeResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class Platform(Protocol):
    """The control plane. Every method names the function; errors are SluiceErrors."""

    async def deploy(self, spec: FunctionSpec) -> FunctionStatus: ...

    async def get(self, name: str) -> FunctionStatus: ...

    async def list(self) -> list[FunctionStatus]: ...

    async def delete(self, name: str) -> None: ...

    async def invoke(self, name: str, request: InvokeRequest) -> InvokeResponse: ...

    async def scale(
        self, name: str, replicas: int | None = None, workers: int | None = None,
        max_replicas: int | None = None,
    ) -> FunctionStatus: ...

    def logs(self, name: str, tail: int = 100, follow: bool = False) -> AsyncIterator[bytes]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
