"""Which Ray the pipeline's jobs do their Ray work on (``tune``'s trials, ``train``'s workers).

In order: a Ray this process has already started or joined (used, and left running); else the
cluster ``RAY_ADDRESS`` names (joined, and left when done): a job attempt on ``sluice up
--platform ray`` has it set to the cluster it runs on, and a user may point at theirs; else a
private local Ray with the CPUs asked for, stopped when done. Never a cluster that ``ray start``
left on this machine without being asked: a bare ``ray.init()`` would join that one.

    >>> choose(initialized=False, env={})
    ('local', None)
    >>> choose(initialized=False, env={"RAY_ADDRESS": "10.0.0.5:6379"})
    ('address', '10.0.0.5:6379')
    >>> held_resources({"SLUICE_RAY_RESOURCES": '{"CPU": 1.0}'}, "address")
    {'CPU': 1.0}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from sluice.errors import PlatformError

Mode = Literal["current", "address", "local"]


def choose(initialized: bool, env: Mapping[str, str]) -> tuple[Mode, str | None]:
    """How to reach Ray: the Ray already initialised here, the address in ``RAY_ADDRESS``, or
    a private local one."""
    if initialized:
        return "current", None
    address = env.get("RAY_ADDRESS", "").strip()
    return ("address", address) if address else ("local", None)


def held_resources(env: Mapping[str, str], mode: Mode) -> dict[str, float]:
    """What this job's own attempt holds on the cluster (``SLUICE_RAY_RESOURCES``, set by the
    Ray platform), which the job's Ray work cannot use; nothing on a private local Ray."""
    text = env.get("SLUICE_RAY_RESOURCES")
    if mode == "local" or not text:
        return {}
    try:
        held = json.loads(text)
    except json.JSONDecodeError:
        return {}
    if not isinstance(held, dict):
        return {}
    return {str(k): float(v) for k, v in held.items() if isinstance(v, int | float)}


@dataclass(frozen=True)
class RaySession:
    """The Ray cluster in use: its total resources (``CPU``, ``GPU``, ``memory``...) and what
    this job's own attempt holds of them."""

    mode: Mode
    resources: dict[str, float]
    held: dict[str, float] = field(default_factory=dict)

    def free(self, name: str) -> float:
        """How much of a resource the job's Ray work can have when the cluster is idle."""
        return max(0.0, self.resources.get(name, 0.0) - self.held.get(name, 0.0))


def local_cpus() -> int:
    """The CPUs this process may run on (a private local Ray gets them all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


@contextmanager
def ray_session(cpus: int, env: Mapping[str, str] | None = None) -> Iterator[RaySession]:
    """Ray for the length of the block (see the module's docstring); ``cpus``: the size of a
    private local Ray, when one is started."""
    import ray
    from ray.exceptions import RayError

    env = os.environ if env is None else env
    mode, address = choose(ray.is_initialized(), env)
    if mode != "current":
        try:
            # "local": a Ray of our own even where `ray start` left its address in /tmp/ray
            ray.init(address=address or "local", num_cpus=cpus if mode == "local" else None,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError, RayError) as exc:
            where = f"the Ray cluster at RAY_ADDRESS={address}" if address else "a local Ray"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PlatformError(f"cannot start or join {where}: {first}") from None
    try:
        resources = {str(k): float(v) for k, v in ray.cluster_resources().items()}
        yield RaySession(mode, resources, held_resources(env, mode))
    finally:
        if mode != "current":
            ray.shutdown()
