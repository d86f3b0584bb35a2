"""The container that runs a sluice function in a pod, shared by every renderer that starts
sluice's own processes (KServe custom predictors, CronJobs, the platform).

Its image is the function's build context built (``images/<name>/``), whose entrypoint is the
command the local platform runs for each worker (:data:`WORKER_COMMAND`) or each job attempt
(:data:`JOB_COMMAND`), reading the config baked beside the code.
"""

from __future__ import annotations

from typing import Any

from sluice.spec import FunctionSpec, Resources

from .options import RenderOptions
from .secrets import env_from, env_vars

FUNCTION_DIR = "/function"  # the build context's files, in the image
PORT = 8080  # the worker's HTTP trigger in a pod (KServe's and Nuclio's convention)
WORKER_CONFIG = f"{FUNCTION_DIR}/worker.json"
WORKER_COMMAND = ("python", "-m", "sluice.worker", "--config")
JOB_COMMAND = ("python", "-m", "sluice.worker.job", "--config")
# where a worker in a pod keeps Prometheus' multiprocess files and fetched model files
METRICS_DIR = "/tmp/sluice/metrics"
MODEL_CACHE = "/tmp/sluice/models"


def job_config_path(trigger: str | None) -> str:
    """Where a job's run config is baked: one per cron trigger, ``run.json`` for on demand."""
    return f"{FUNCTION_DIR}/jobs/{trigger or 'run'}.json"


def resource_limits(resources: Resources) -> dict[str, Any]:
    """Kubernetes resources for one replica: limits only (requests default to them), quantities
    as strings, GPUs as ``nvidia.com/gpu``."""
    limits: dict[str, str] = {}
    if resources.cpu:
        limits["cpu"] = f"{round(resources.cpu * 1000)}m"
    if resources.memory:
        limits["memory"] = resources.memory
    if resources.gpu:
        limits["nvidia.com/gpu"] = str(resources.gpu)
    return {"limits": limits} if limits else {}


def function_container(spec: FunctionSpec, options: RenderOptions, *, name: str,
                       args: list[str] | None = None, extra_env: dict[str, str] | None = None,
                       port: int | None = None, ready_path: str | None = None
                       ) -> dict[str, Any]:
    """A container of the function's image: its env (secrets by reference), the platform-wide
    Secret, its resources, and an HTTP port with a readiness probe when it serves one."""
    container: dict[str, Any] = {"name": name, "image": options.image(spec.name)}
    if args:
        container["args"] = list(args)
    env = env_vars({**spec.env, **(extra_env or {})})
    if env:
        container["env"] = env
    container["envFrom"] = env_from(options.secret)
    if port is not None:
        container["ports"] = [{"containerPort": port, "protocol": "TCP"}]
        if ready_path:
            container["readinessProbe"] = {"httpGet": {"path": ready_path, "port": port},
                                           "periodSeconds": 5}
    resources = resource_limits(spec.resources)
    if resources:
        container["resources"] = resources
    return container
