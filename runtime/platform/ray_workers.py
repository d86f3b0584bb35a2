"""Workers of http, serving and Kafka functions on Ray: each worker process in a Ray actor.

``sluice up --platform ray`` hands the supervisor (:mod:`sluice.platform.supervisor`)
:class:`RayWorkers` as its launcher. Each worker is then a :class:`WorkerActor`, placed by Ray
with its share of the replica's resources, that runs the very command a local worker runs,
``python -m sluice.worker --config WORKER.json``, with a control pipe and a lifeline of its own
(:mod:`sluice.platform.ray_process`); the platform long-polls the actor for the worker's lines.
Readiness, health, restarts with back-off, rolling deploys, drains and ``sluice scale`` are the
supervisor's, the same as on the local platform. An actor that dies (``ray.kill``, its node
lost) is a crashed worker: the supervisor starts a new actor, with back-off while that keeps
happening.

Requests never pass through Ray: the worker serves the function's port itself, with sluice's
own HTTP server, exactly as a local worker does. Nothing can be inherited from the platform by a
process on a Ray worker, so instead of sharing the platform's listening socket the platform
holds the port bound (not listening) with ``SO_REUSEPORT``, and each worker binds and listens on
the same host and port with ``SO_REUSEPORT``: the kernel spreads new connections over the
workers listening, and refuses them while none is. Unlike the local platform's shared socket,
connections a worker had accepted into its backlog but not yet taken are reset when it dies,
and only processes of the same user can join the port. A worker on another node binds that
node's address, so on a multi-node cluster give the HTTP trigger ``host: 0.0.0.0`` and put a
load balancer in front; the endpoint the platform reports is its own node's.

Resources are per replica, as on Kubernetes: a replica of ``workers: N`` is N actors each
holding 1/N of ``resources`` (``cpu``, ``gpu``, ``memory``). Unset, ``cpu`` is 0.5 per replica,
not the 1 CPU of a job run: a worker mostly waits on its sockets, and a rolling deploy holds the
old generation's actors until the new one is ready, so a 2-replica function on a 2-CPU Ray can
still be redeployed. Give ``resources.cpu`` for CPU-bound handlers (Ray also sets
``OMP_NUM_THREADS`` from it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError

from sluice.errors import DeployError
from sluice.spec import FunctionSpec
from sluice.worker.config import WorkerConfig

from .build_env import BuildEnv
from .ray_cluster import first_line, ray_resources, unplaceable, why_dead
from .ray_process import ProcessActor, follow
from .supervisor import READY_TIMEOUT, Launch, OnLine, describe_exit

DEFAULT_REPLICA_CPUS = 0.5  # a replica's CPUs when its spec names none (see the docstring)
NAMESPACE = "sluice"  # the Ray namespace of the workers' actors (named function.gG.wN.id)
# Ray runs its worker processes at niceness 15, and a worker's process would inherit it: on a
# busy node a replica serving requests would then lose the CPU to any batch work. Its actor
# runs at the platform's priority instead, as Ray starts its own job drivers.
NOT_NICED = {"env_vars": {"RAY_worker_niceness": "0"}}


@ray.remote(max_restarts=0)
class WorkerActor(ProcessActor):
    """On a Ray worker: one worker process of a function (``python -m sluice.worker``)."""


def worker_options(spec: FunctionSpec) -> dict[str, Any]:
    """The actor options of each of the function's workers: its share of a replica's
    resources."""
    return ray_resources(spec.resources, DEFAULT_REPLICA_CPUS, spec.workers)


def hold_port(host: str, port: int | None) -> socket.socket:
    """The function's port, bound with SO_REUSEPORT and not listening: it stays the function's
    while workers come and go, and only they accept on it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port or 0))
    except BaseException:
        sock.close()
        raise
    return sock


class RayWorker:
    """The platform's side of one worker in its actor: its lines are followed from the start;
    the actor is killed once the worker has exited (its resources go back to Ray)."""

    def __init__(self, actor: Any, pid: int, on_line: OnLine) -> None:
        self.actor = actor
        self._pid = pid
        self._code: int | None = None
        self._lost: str | None = None  # why the actor died under the worker, if it did
        self._following = asyncio.create_task(self._follow(on_line))

    async def _follow(self, on_line: OnLine) -> int:
        try:
            code = await follow(self.actor, on_line)
        except RayError as exc:  # the actor died (killed, its node lost): a crashed worker
            self._lost = why_dead(exc)
            code = -signal.SIGKILL
        except Exception as exc:  # its lines cannot be taken (e.g. the log's disk is full):
            # a worker the platform cannot follow is restarted like a crashed one, not lost
            self._lost = f"its output could not be followed: {type(exc).__name__}: {exc}"
            code = -signal.SIGKILL
        finally:
            self._kill()
        self._code = code
        return code

    def _kill(self) -> None:
        with contextlib.suppress(Exception):
            ray.kill(self.actor)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._code

    async def wait(self) -> int:
        return await asyncio.shield(self._following)

    async def stop(self, timeout: float) -> bool:
        if self._following.done():
            return False
        stubborn = False
        try:
            stubborn = bool(await asyncio.wait_for(
                self.actor.terminate.remote(timeout, False), timeout + 10))
        except (RayError, TimeoutError):
            self._kill()  # the worker goes with the actor's lifeline
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._following), 10)
        return stubborn

    def describe_exit(self) -> str:
        if self._lost is not None:
            return f"lost its Ray actor ({self._lost})"
        return describe_exit(self._code)


@dataclass(frozen=True)
class RayLaunch:
    """Starts one generation's workers, each in a new actor with these options."""

    options: dict[str, Any]
    build_env: BuildEnv | None
    cwd: str  # the platform's working directory: workers run there when their node has it

    async def __call__(self, config: WorkerConfig, config_path: Path, on_line: OnLine
                       ) -> RayWorker:
        why = unplaceable(self.options, await asyncio.to_thread(ray.cluster_resources))
        if why is not None:
            raise DeployError(f"Ray cannot place worker {config.worker_id}: {why}")
        # the port is the one the platform holds; fds are the actor's to fill in
        config = replace(config, reuse_port=config.port is not None, listen_fd=None,
                         control_fd=None, parent_fd=None)
        name = f"{config.function}.g{config.generation}.w{config.worker_id}.{uuid.uuid4().hex[:6]}"
        actor = WorkerActor.options(  # type: ignore[attr-defined]
            **self.options, name=name, namespace=NAMESPACE, runtime_env=NOT_NICED).remote()
        try:
            pid = await asyncio.wait_for(asyncio.ensure_future(actor.start.remote(
                "sluice.worker", config.to_json(), self.build_env, self.cwd)), READY_TIMEOUT)
        except TimeoutError:
            ray.kill(actor)
            free = await asyncio.to_thread(ray.available_resources)
            wanted = ", ".join(f"{k}={v:g}" for k, v in self.options.items())
            raise DeployError(
                f"Ray did not place worker {config.worker_id} ({wanted}) within "
                f"{READY_TIMEOUT:g}s; the cluster has {free.get('CPU', 0):g} CPU(s) free (a "
                "redeploy holds the old generation's workers until the new one is ready)"
            ) from None
        except RayError as exc:
            ray.kill(actor)
            raise DeployError(f"worker {config.worker_id}'s Ray actor could not start it: "
                              f"{first_line(exc)}") from None
        except BaseException:
            ray.kill(actor)
            raise
        return RayWorker(actor, int(pid), on_line)


@dataclass(frozen=True)
class RayWorkers:
    """The :class:`~sluice.platform.supervisor.WorkerLauncher` of
    ``sluice up --platform ray``: every worker in a Ray actor."""

    def hold_port(self, host: str, port: int | None) -> socket.socket:
        return hold_port(host, port)

    def launch_for(self, spec: FunctionSpec, sock: socket.socket | None,
                   build_env: BuildEnv | None) -> Launch:
        """Refuses at once a generation the whole cluster could not hold (Ray would leave its
        workers pending until the deploy times out)."""
        options = worker_options(spec)
        count = max(1, spec.replicas.min) * spec.workers
        why = unplaceable({k: v * count for k, v in options.items()}, ray.cluster_resources(),
                          "together they ask" if count > 1 else "it asks")
        if why is not None:
            raise DeployError(f"Ray cannot place the function's {count} worker(s): {why}")
        return RayLaunch(options, build_env, os.getcwd())
