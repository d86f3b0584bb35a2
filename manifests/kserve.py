"""Serving functions as KServe InferenceServices (serving.kserve.io/v1beta1).

- ``backend: torch`` or ``kserve`` (or a remote ``triton_url``): a custom predictor, the
  function's image running the sluice worker (the same command and config as a local worker),
  which answers the Open Inference Protocol (V2) on port 8080 with sluice's adaptive batcher
  and consumes the function's Kafka triggers itself. One worker process per pod: scale with
  replicas (``workers`` > 1 is reported, not applied).
- ``backend: triton`` (a Triton server sluice would start): KServe's Triton runtime
  (``modelFormat: triton``) on a generated model repository (``triton/<function>/``:
  ``config.pbtxt`` from :mod:`sluice.serving.triton_config`, the Python-backend ``model.py``
  the local Triton runs) uploaded under ``--artifacts``. Triton answers HTTP only, so a Kafka
  trigger is refused here, as is a model without its ``inputs`` and ``outputs``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from sluice.errors import SpecError
from sluice.spec import FunctionSpec

from .containers import PORT, function_container, resource_limits
from .options import RenderOptions
from .secrets import env_vars

API_VERSION = "serving.kserve.io/v1beta1"
TRITON_MODEL_VERSION = "1"
MODEL_FILE = "model.pt"


def uses_triton_runtime(spec: FunctionSpec) -> bool:
    """Served by KServe's Triton runtime (not by sluice's worker)."""
    return bool(spec.serving and spec.serving.backend == "triton" and not spec.serving.triton_url)


def triton_storage_uri(spec: FunctionSpec, options: RenderOptions) -> str:
    return f"{options.artifacts.rstrip('/')}/triton/{spec.name}"


def inference_service(spec: FunctionSpec, options: RenderOptions) -> dict[str, Any]:
    """The InferenceService for a serving function (a cluster spec)."""
    assert spec.serving is not None
    predictor: dict[str, Any] = {
        "minReplicas": spec.replicas.min,
        "maxReplicas": spec.replicas.max or max(1, spec.replicas.min),
        "timeout": math.ceil(spec.timeout),
    }
    if uses_triton_runtime(spec):
        if spec.kafka_triggers:
            raise SpecError(f"triggers.{next(iter(spec.kafka_triggers))}: KServe's "
                            "Triton runtime answers HTTP only; serve with backend torch (sluice's "
                            "worker consumes Kafka) or score the stream from another function")
        # the container's name, which KServe (and its SDK's model) give one anyway
        model: dict[str, Any] = {"name": "kserve-container", "modelFormat": {"name": "triton"},
                                 "protocolVersion": "v2",
                                 "storageUri": triton_storage_uri(spec, options)}
        env = env_vars(spec.env)
        if env:
            model["env"] = env
        resources = resource_limits(spec.resources)
        if resources:
            model["resources"] = resources
        predictor["model"] = model
    else:
        predictor["containers"] = [function_container(
            spec, options, name="kserve-container", port=PORT, ready_path="/v2/health/ready")]
    metadata: dict[str, Any] = {"name": spec.name, "labels": dict(spec.labels)}
    if options.namespace:
        metadata["namespace"] = options.namespace
    return {"apiVersion": API_VERSION, "kind": "InferenceService", "metadata": metadata,
            "spec": {"predictor": predictor}}


def kserve_warnings(spec: FunctionSpec) -> list[str]:
    if spec.workers > 1 and not uses_triton_runtime(spec):
        return [f"{spec.name}: workers: {spec.workers} worker processes per replica run on the "
                "local platform; a KServe pod runs one, so scale it with replicas"]
    return []


def triton_repository(spec: FunctionSpec) -> dict[str, bytes]:
    """The model repository KServe's Triton runtime loads, as files under ``triton/<name>/``:
    the ``model.pt`` itself comes from the registry (see the rendered README)."""
    from sluice.serving.triton_config import Tensor, TritonModel, model_config

    serving = spec.serving
    assert serving is not None
    if not serving.inputs or not serving.outputs:
        raise SpecError("serving.inputs: a Triton model repository needs the "
                        "model's inputs and outputs in the spec (they are read from the "
                        "registry only at run time)")
    name = re.split("[@:]", serving.model)[0]
    inputs = [Tensor(t.name, t.datatype, tuple(t.dims)) for t in serving.inputs]
    outputs = [Tensor(t.name, t.datatype, tuple(t.dims)) for t in serving.outputs]
    # as the local Triton backend: Triton's queue waits a tenth of the latency objective
    model = TritonModel(name, inputs, outputs, max_batch=serving.max_batch,
                        latency_ms=serving.latency_ms / 10, gpus=spec.resources.gpu)
    settings = {"file": MODEL_FILE, "inputs": [t.name for t in inputs],
                "outputs": [t.name for t in outputs]}
    import sluice.serving

    model_py = Path(sluice.serving.__file__).parent / "triton_model.py"
    root = f"triton/{spec.name}/{name}"
    return {f"{root}/config.pbtxt": model_config(model).encode(),
            f"{root}/{TRITON_MODEL_VERSION}/model.py": model_py.read_bytes(),
            f"{root}/{TRITON_MODEL_VERSION}/sluice.json":
                (json.dumps(settings, indent=2) + "\n").encode()}
