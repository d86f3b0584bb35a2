"""The Ray cluster of ``sluice up --platform ray``: joining it, and what a function's resources
ask of it (actor options), for job attempts (:mod:`sluice.platform.ray_jobs`) and workers
(:mod:`sluice.platform.ray_workers`) alike."""

from __future__ import annotations

import os
import re
from typing import Any

import ray
from ray.exceptions import RayError

from sluice.errors import PlatformError
from sluice.spec import Resources

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``512Mi``, ``2G``, ``1000``) in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?", quantity)
    if match is None:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(float(match[1]) * _UNITS[match[2] or ""])


def ray_resources(resources: Resources, default_cpus: float = 1, share: int = 1
                  ) -> dict[str, Any]:
    """The actor options that reserve what a spec's resources ask for: ``default_cpus`` when
    ``resources.cpu`` is unset (1, as a Ray task), and ``1/share`` of everything (a replica's
    resources shared by its ``share`` worker processes, one actor each)."""
    cpus = resources.cpu if resources.cpu is not None else default_cpus
    options: dict[str, Any] = {"num_cpus": cpus / share if share > 1 else cpus,
                               "num_gpus": resources.gpu / share if share > 1 else resources.gpu}
    if resources.memory is not None:
        options["memory"] = memory_bytes(resources.memory) // share
    return options


def unplaceable(options: dict[str, Any], cluster: dict[str, float], asker: str = "it asks"
                ) -> str | None:
    """Why a cluster with these total resources (all its nodes together) could never run the
    actor (or actors: ``asker`` names who asks); None when it could. A request no single node
    can hold is not caught here."""
    for option, name, unit, scale in (("num_cpus", "CPU", "CPU(s)", 1),
                                      ("num_gpus", "GPU", "GPU(s)", 1),
                                      ("memory", "memory", "MiB of memory", 2**20)):
        wanted = options.get(option) or 0
        have = cluster.get(name, 0)
        if wanted > have:
            return (f"{asker} for {wanted / scale:g} {unit} but the whole Ray cluster has "
                    f"{have / scale:g}; lower the function's resources or add nodes")
    return None


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (Ray's run on for pages)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def why_dead(exc: BaseException) -> str:
    """Why Ray says an actor died (``it was killed by `ray.kill```), else the error's first
    line."""
    for line in str(exc).splitlines():
        if line.startswith("The actor is dead because "):
            return line.removeprefix("The actor is dead because ").rstrip(".")
    return first_line(exc)


def connect(address: str | None, num_cpus: int | None = None) -> str:
    """Join the Ray cluster at ``address`` (``auto``: the one ``ray start`` started here), or
    start a local one with ``num_cpus`` CPUs (all of this machine's when None). Returns where
    Ray is, for the startup banner and ``sluice info``. Ray's own services listen on the host's
    address, not only the loopback (Ray does not let us bind them); its dashboard stays off."""
    try:
        # "local": a Ray of our own, even where RAY_ADDRESS is set or `ray start` left its
        # address in /tmp/ray (a bare ray.init() would join that cluster instead)
        ray.init(address=address or "local", num_cpus=None if address else num_cpus,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError, RayError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        hint = "start one with `ray start --head`, or leave out --ray-address"
        if address not in (None, "auto") and os.environ.get("RAY_AUTH_MODE") != "token":
            # Ray sends its token (~/.ray/auth_token) to an explicit address only when asked
            hint = ("if the cluster uses Ray's token authentication, as `ray start` does by "
                    "default, set RAY_AUTH_MODE=token (and RAY_AUTH_TOKEN when "
                    "~/.ray/auth_token is not the cluster's), or use --ray-address auto on its "
                    "head node")
        raise PlatformError(f"cannot start or join {where}: {first_line(exc)} ({hint})"
                            ) from None
    return str(ray.get_runtime_context().gcs_address)


def disconnect() -> None:
    """Leave the cluster (a local Ray started by :func:`connect` stops with it)."""
    ray.shutdown()
