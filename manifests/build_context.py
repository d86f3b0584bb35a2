"""A function's build context (``images/<name>/``) and sluice's own (``images/sluice/``).

A function's context holds everything it needs at run time: its source file (when it ships
one), ``requirements.txt``, its cluster spec (``spec.yaml``), the worker or run configs its
entrypoint reads, and a ``Dockerfile``::

    FROM <registry>/sluice:<tag>          # sluice itself, from images/sluice/Dockerfile
    RUN pip install -r requirements.txt   # the leading plain `pip install` build commands
    RUN <command>                         # the build commands after them, in order
    ENTRYPOINT python -m sluice.worker --config /function/worker.json
                                          # or python -m sluice.worker.job --config (jobs)

The entrypoint is the command the local platform runs for each worker (or each job attempt),
and ``worker.json`` is the config it would write for one worker of the function, listening on
port 8080 on all interfaces. Env is not baked: the pod's env (secrets by reference) is the
function's.
"""

from __future__ import annotations

import json
import shlex
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import yaml

from sluice.spec import FunctionSpec, Kind
from sluice.worker.config import WorkerConfig

from .containers import (
    FUNCTION_DIR,
    JOB_COMMAND,
    METRICS_DIR,
    MODEL_CACHE,
    PORT,
    WORKER_COMMAND,
    WORKER_CONFIG,
    job_config_path,
)
from .cronjob import job_runs
from .options import RenderOptions

_PIP = (["pip", "install"], ["pip3", "install"], ["python", "-m", "pip", "install"])
_OPERATORS = set("|&;<>()")


def split_build_commands(commands: list[str]) -> tuple[list[str], list[str]]:
    """(requirements, the commands left): the leading commands that are a plain
    ``pip install PKG...`` (no options, no shell syntax) become requirement lines; from the
    first other command on, every command runs as it is, in order.

    >>> split_build_commands(["pip install pandas 'numpy<3'", "apt-get install -y git",
    ...                       "pip install torch"])
    (['pandas', 'numpy<3'], ['apt-get install -y git', 'pip install torch'])
    """
    requirements: list[str] = []
    for index, command in enumerate(commands):
        packages = _plain_pip(command)
        if packages is None:
            return requirements, list(commands[index:])
        requirements += packages
    return requirements, []


def _plain_pip(command: str) -> list[str] | None:
    if "$" in command or "`" in command:  # expansions: the shell's business
        return None
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:
        return None
    if any(set(word) <= _OPERATORS for word in words):  # && ; | > ...
        return None
    for prefix in _PIP:
        packages = words[len(prefix):]
        if words[:len(prefix)] == prefix and packages:
            return None if any(p.startswith("-") for p in packages) else packages
    return None


def worker_config(spec: FunctionSpec, options: RenderOptions) -> WorkerConfig:
    """The config the local platform would give one worker of ``spec``, for a pod: port 8080
    on all interfaces, no platform, the cluster's Kafka and artifact store."""
    from sluice.platform.worker_configs import WorkerDefaults, worker_configs

    defaults = WorkerDefaults(api_url=None, trigger_token="",
                              kafka_bootstrap=options.kafka_bootstrap,
                              artifacts=options.artifacts if spec.serving else None)
    source_dir = Path(FUNCTION_DIR) if spec.source else None
    with tempfile.TemporaryDirectory() as scratch:  # worker_configs makes the metrics folder
        config = worker_configs(spec, 1, source_dir, PORT, Path(scratch), defaults)[0]
    return replace(config, host="0.0.0.0", env={}, metrics_dir=METRICS_DIR,
                   model_cache=MODEL_CACHE if spec.serving else None)


def job_configs(spec: FunctionSpec) -> dict[str, dict[str, Any]]:
    """Each CronJob's run config (``sluice.worker.job.JobConfig`` fields), by path."""
    from sluice.worker.job import JobConfig

    out = {}
    for trigger, run in job_runs(spec).items():
        config = JobConfig(function=spec.name, handler=spec.handler,
                           source_dir=FUNCTION_DIR if spec.source else None,
                           run_id=f"{spec.name}-{trigger or 'run'}", params=run["params"],
                           trigger=run["trigger"], trigger_name=trigger)
        out[job_config_path(trigger)] = asdict(config)
    return out


def _json(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def dockerfile(spec: FunctionSpec, options: RenderOptions, requirements: list[str],
               commands: list[str]) -> str:
    job = spec.kind == Kind.JOB
    lines = [f"# The function {spec.name!r} ({spec.kind}), rendered by `sluice render`.",
             f"#   docker build -t {options.image(spec.name)} images/{spec.name}   (in the "
             "rendered folder)",
             "# Its entrypoint is the command the local platform runs for each "
             + ("job attempt." if job else "worker."),
             f"ARG SLUICE_IMAGE={options.base_image}",
             "FROM ${SLUICE_IMAGE}",
             f"WORKDIR {FUNCTION_DIR}"]
    if requirements:
        lines += [f"COPY requirements.txt {FUNCTION_DIR}/requirements.txt",
                  f"RUN pip install --no-cache-dir -r {FUNCTION_DIR}/requirements.txt"]
    lines += [f"RUN {command}" for command in commands]
    lines.append(f"COPY . {FUNCTION_DIR}/")
    if not job:
        lines.append(f"RUN mkdir -p {METRICS_DIR}" + (f" {MODEL_CACHE}" if spec.serving else ""))
    lines.append(f"ENV PYTHONPATH={FUNCTION_DIR} PYTHONUNBUFFERED=1")
    if job:
        lines += [f"ENTRYPOINT {json.dumps(list(JOB_COMMAND))}",
                  f"CMD {json.dumps([job_config_path(None)])}"]
    else:
        lines.append(f"ENTRYPOINT {json.dumps([*WORKER_COMMAND, WORKER_CONFIG])}")
    return "\n".join(lines) + "\n"


def spec_yaml(spec: FunctionSpec) -> str:
    """The cluster spec as a sluice spec file: fields left at their defaults are left out
    (kind, a trigger's kind and timeout stay: a job's timeout default is not the field's), the
    source is the file beside it."""
    data = spec.model_dump(mode="json", exclude_defaults=True, exclude={"source"})
    for name, trigger in spec.triggers.items():  # the discriminator stays, default or not
        data.setdefault("triggers", {})[name] = {"kind": trigger.kind,
                                                 **data.get("triggers", {}).get(name, {})}
    head = {"name": spec.name, "kind": spec.kind.value, "timeout": spec.timeout}
    return yaml.safe_dump({**head, **data}, sort_keys=False)


def function_context(spec: FunctionSpec, options: RenderOptions) -> dict[str, bytes]:
    """The files of ``images/<name>/``, by path relative to it."""
    commands = list(spec.build.commands) if spec.build else []
    requirements, rest = split_build_commands(commands)
    files: dict[str, bytes] = {}
    files["requirements.txt"] = "".join(f"{r}\n" for r in requirements).encode()
    files["spec.yaml"] = spec_yaml(spec).encode()
    if spec.source is not None:
        files[spec.source.filename] = spec.source.text()
    if spec.kind == Kind.JOB:
        for path, config in job_configs(spec).items():
            files[path[len(FUNCTION_DIR) + 1:]] = _json(config)
    else:
        files["worker.json"] = _json(asdict(worker_config(spec, options)))
    files["Dockerfile"] = dockerfile(spec, options, requirements, rest).encode()
    return files


SLUICE_DOCKERFILE = """\
# sluice itself: the base of every function's image, and the platform's image.
# Build it from the root of the sluice source tree, with this file:
#   docker build -f path/to/images/sluice/Dockerfile -t {image} .
# torch comes from the CPU wheel index unless TORCH_INDEX names another (a CUDA one).
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /opt/sluice
COPY pyproject.toml README.md ./
COPY runtime runtime
COPY triggers triggers
COPY serving serving
COPY functions functions
COPY manifests manifests
RUN pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" .
ENV SLUICE_HOME=/var/lib/sluice PYTHONUNBUFFERED=1
EXPOSE 8070
CMD ["sluice", "up", "--no-broker"]
"""


def sluice_context(options: RenderOptions) -> dict[str, bytes]:
    """The files of ``images/sluice/``."""
    return {"Dockerfile": SLUICE_DOCKERFILE.format(image=options.base_image).encode()}
