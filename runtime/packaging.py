"""From what a user points at (a handler file, a function.yaml, a notebook) to a spec dict for
the API.

This runs in the CLI, so it stays light: plain dicts out, validation happens once, on the platform
(which answers with a message naming the bad field).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from .errors import SpecError

FUNCTION_FILE_SUFFIXES = (".py", ".yaml", ".yml")  # what `sluice up DIR` deploys


def parse_trigger_option(text: str) -> tuple[str, dict[str, Any]]:
    """``http`` or ``http:port=8081,max_inflight=64`` -> (name, trigger dict)."""
    kind, _, rest = text.partition(":")
    kind = kind.strip()
    if not kind:
        raise SpecError(f"--trigger {text!r}: give a kind, e.g. 'http' or 'http:port=8081'")
    trigger: dict[str, Any] = {"kind": kind}
    name = kind
    lists = ("topics", "bootstrap_servers")
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep and kind == "cron" and isinstance(trigger.get("schedule"), str):
            trigger["schedule"] += "," + item  # a list in a cron field: '0 6,18 * * *'
            continue
        if not sep or not key:
            raise SpecError(f"--trigger {text!r}: {item!r} must be key=value")
        key = key.strip().replace("-", "_")
        value = value.strip()
        if len(value) > 1 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]  # quotes the shell left in place
        if kind == "cron" and key in ("schedule", "interval", "timezone"):
            trigger[key] = value  # text, never a number
        elif key == "name":
            name = value
        elif kind == "kafka" and key in ("topic", *lists):
            # kafka:topic=events or topics=a+b (',' separates options, so '+' separates items)
            trigger.setdefault("topics" if key == "topic" else key, []).extend(
                v for v in value.strip().split("+") if v)
        elif kind == "kafka" and key == "group":
            trigger["group"] = value.strip()
        else:
            trigger[key] = _scalar(value.strip())
    return name, trigger


def _scalar(value: str) -> Any:
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    if re.fullmatch(r"-?\d+\.\d*", value):
        return float(value)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def source_of(path: Path) -> dict[str, str]:
    return {"filename": path.name, "code": base64.b64encode(path.read_bytes()).decode("ascii")}


def spec_from_path(
    path: Path | None,
    name: str | None = None,
    handler: str | None = None,
    kind: str | None = None,
    triggers: list[str] | None = None,
    env: list[str] | None = None,
    workers: int | None = None,
    replicas: int | None = None,
    timeout: float | None = None,
    version: str | None = None,
    serving: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The spec dict to deploy: options given on the command line override the file's;
    ``serving`` (from :func:`serving_options`) makes it a serving function."""
    if path is None:  # a registry model and nothing else: `sluice deploy --model fraud@prod`
        if not serving or not serving.get("model"):
            raise SpecError("give a handler file (.py), a function.yaml, a notebook (.ipynb), "
                            "or --model to serve a registry model")
        spec: dict[str, Any] = {"name": name or re.split("[@:]", serving["model"])[0]}
    elif not path.exists():
        raise SpecError(f"{path}: no such file")
    elif path.suffix == ".py":
        spec = {
            "name": name or _name_from_file(path),
            "handler": f"{path.stem}:handler",
            "source": source_of(path),
        }
    elif path.suffix in (".yaml", ".yml"):
        spec = _spec_from_yaml(path)
    elif path.suffix == ".ipynb" and kind == "job":  # run whole, with papermill
        spec = _notebook_job(path, name)
    elif path.suffix == ".ipynb":  # a handler in a notebook, exported as nuclio-jupyter does
        from .notebook import spec_from_notebook

        spec = spec_from_notebook(path, name)
    else:
        raise SpecError(f"{path}: deploy a handler file (.py), a function.yaml or a notebook "
                        "(.ipynb)")
    if name:
        spec["name"] = name
    if handler:
        module = spec.get("handler", ":").split(":")[0]
        spec["handler"] = handler if ":" in handler else f"{module}:{handler}"
    if kind:
        spec["kind"] = kind
    if triggers:
        spec["triggers"] = dict(parse_trigger_option(t) for t in triggers)
    if env:
        spec["env"] = {**spec.get("env", {}), **dict(_env_pair(e) for e in env)}
    if workers is not None:
        spec["workers"] = workers
    if replicas is not None:
        spec["replicas"] = {**spec.get("replicas", {}), "min": replicas}
    if timeout is not None:
        spec["timeout"] = timeout
    if version is not None:
        spec["version"] = version
    if serving:
        if not kind:
            spec["kind"] = "serving"
        spec["serving"] = {**spec.get("serving", {}), **serving}
    return spec


def serving_options(model: str | None = None, batching: str | None = None,
                    backend: str | None = None, inputs: list[str] | None = None,
                    outputs: list[str] | None = None) -> dict[str, Any]:
    """``sluice deploy``'s model flags as ``spec.serving`` fields: ``--model fraud@production
    --batching max_batch=64,latency_ms=20 --backend triton --inputs x:FP32:64 --outputs y:8``."""
    serving: dict[str, Any] = {}
    if model:
        serving["model"] = model
    if backend:
        serving["backend"] = backend
    for item in filter(None, (part.strip() for part in (batching or "").split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in _BATCHING:
            raise SpecError(f"--batching {batching!r}: {item!r} must be key=value with key one "
                            f"of {', '.join(_BATCHING)}")
        try:
            serving[key] = _BATCHING[key](value.strip())
        except ValueError:
            raise SpecError(f"--batching {batching!r}: {key} must be a number, got "
                            f"{value.strip()!r}") from None
    if inputs:
        serving["inputs"] = [tensor_option(t, "--inputs") for t in inputs]
    if outputs:
        serving["outputs"] = [tensor_option(t, "--outputs") for t in outputs]
    return serving


_BATCHING: dict[str, Any] = {"max_batch": int, "latency_ms": float, "max_inflight": int,
                             "reload_interval": float}


def tensor_option(text: str, flag: str) -> dict[str, Any]:
    """``x:FP32:64`` or ``image:UINT8:3,224,224`` or ``x:64`` (FP32) -> a TensorSpec dict."""
    parts = text.split(":")
    if len(parts) == 2:
        parts.insert(1, "FP32")
    if len(parts) != 3 or not parts[0]:
        raise SpecError(f"{flag} {text!r}: give NAME:DATATYPE:DIMS, e.g. x:FP32:64 or "
                        "image:UINT8:3,224,224")
    name, datatype, dims = parts
    try:
        shape = [int(d) for d in dims.split(",")]
    except ValueError:
        raise SpecError(f"{flag} {text!r}: the dims are integers separated by ',' (-1: any "
                        "length), e.g. 3,224,224") from None
    return {"name": name, "datatype": datatype.upper(), "dims": shape}


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SpecError(f"--env {text!r}: must be NAME=value")
    return key, value


def _name_from_file(path: Path) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", path.stem.lower()).strip("-") or "function"


def yaml_mapping(path: Path, holds: str) -> dict[str, Any]:
    """A YAML file's top-level mapping; SpecError for bad YAML or anything else at the top
    (``holds``: what the mapping should be, for the message)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: must hold a mapping ({holds})")
    return data


def _notebook_job(path: Path, name: str | None) -> dict[str, Any]:
    """A job that executes the notebook with papermill on each run; its params are the
    notebook's ``parameters`` cell."""
    from .worker.notebook_job import HANDLER, declared_params

    module = re.sub(r"\W", "_", path.stem)
    if not module[:1].isalpha():
        module = f"nb_{module}"
    try:
        params = declared_params(path)
    except Exception as exc:  # papermill reads the JSON: a broken file is the user's to fix
        raise SpecError(f"{path}: cannot read the notebook: {type(exc).__name__}: {exc}") from None
    return {"name": name or _name_from_file(path), "kind": "job", "handler": f"{module}:{HANDLER}",
            "source": {"filename": f"{module}.ipynb",
                       "code": base64.b64encode(path.read_bytes()).decode("ascii")},
            "params": params}


def _spec_from_yaml(path: Path) -> dict[str, Any]:
    data = yaml_mapping(path, "a function spec or a Nuclio function.yaml")
    if str(data.get("apiVersion", "")).startswith("nuclio.io/"):
        from .nuclio_config import from_nuclio

        spec = from_nuclio(data, source="yaml")
    else:
        spec = dict(data)
    if "source" not in spec:
        module = str(spec.get("handler", "main:handler")).split(":")[0]
        candidate = path.parent / f"{module.replace('.', '/')}.py"
        if candidate.exists():
            spec["source"] = source_of(candidate)
    return spec
