"""A deployed function as the platform holds it in memory, and the status it reports."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from sluice.spec import FunctionSpec, HttpTrigger, Kind

from .autoscale import Autoscaler
from .base import FunctionStatus
from .build_env import BuildEnv
from .logs import FunctionLog
from .states import FunctionState
from .supervisor import WorkerSet


@dataclass
class Deployed:
    """A deployed function as the platform holds it in memory."""

    spec: FunctionSpec
    generation: int
    log: FunctionLog
    created: float
    state: FunctionState = FunctionState.DEPLOYING
    message: str = ""
    sock: socket.socket | None = None
    workers: WorkerSet | None = None
    autoscaler: Autoscaler | None = None  # when its replicas follow its load
    source_dir: Path | None = None
    build_env: BuildEnv | None = None  # the venv its build commands ran into
    restarts: int = 0
    updated: float = field(default_factory=time.time)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def port(self) -> int | None:
        return self.sock.getsockname()[1] if self.sock is not None else None

    @property
    def running_replicas(self) -> int | None:
        """Replicas its workers make now (None: it has no workers, e.g. a job)."""
        if self.workers is None or not self.workers.configs:
            return None
        return len(self.workers.configs) // self.spec.workers


def with_default_trigger(spec: FunctionSpec) -> FunctionSpec:
    """HTTP and serving functions get an HTTP trigger when the spec names no trigger at all."""
    if not spec.triggers and spec.kind in (Kind.HTTP, Kind.SERVING):
        triggers = {name: t.model_dump(mode="json") for name, t in spec.triggers.items()}
        triggers["http"] = HttpTrigger().model_dump(mode="json")
        return spec.with_changes(triggers=triggers)
    return spec


def status_of(fn: Deployed, runs_active: int = 0) -> FunctionStatus:
    """What `sluice get` shows; ``runs_active``: a job's runs not finished yet."""
    spec = fn.spec
    workers = fn.workers
    port = fn.port
    autoscaler = fn.autoscaler
    replicas = fn.running_replicas or max(1, spec.replicas.min)
    return FunctionStatus(
        name=spec.name,
        kind=str(spec.kind),
        state=fn.state,
        generation=fn.generation,
        version=spec.version,
        replicas=replicas,
        workers=spec.workers,
        workers_ready=len(workers.ready) if workers else 0,
        triggers=[f"{t.kind}:{name}" for name, t in spec.triggers.items()],
        endpoint=f"http://{spec.http_trigger.host}:{port}"
        if spec.http_trigger and port else None,
        message=fn.message,
        restarts=fn.restarts,
        created=fn.created,
        updated=fn.updated,
        spec=spec.model_dump(mode="json", exclude_none=True),
        pids=sorted(w.process.pid for w in workers.workers.values()
                    if w.process is not None and w.process.returncode is None)
        if workers else [],
        runs_active=runs_active,
        desired_replicas=autoscaler.desired if autoscaler is not None else replicas,
        autoscale=autoscaler.status() if autoscaler is not None else None,
    )
