"""The model that a local Triton server runs for sluice: a Triton Python-backend model
(``model.py``) that serves a torch file from the registry.

sluice copies this file into the model repository it generates, beside the model file and a
``sluice.json`` that names the file and the tensors. It runs inside Triton's Python backend,
in Triton's own environment (numpy<2, torch; not sluice's), so it imports nothing from sluice.

Triton's dynamic batcher hands :meth:`TritonPythonModel.execute` the requests it merged; they
are concatenated on the batch axis, run in one forward pass and split back per request. A
request that fails gets its own error; the others are still answered.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        import torch

        folder = Path(args["model_repository"]) / args["model_version"]
        settings = json.loads((folder / "sluice.json").read_text())
        self.inputs: list[str] = settings["inputs"]
        self.outputs: list[str] = settings["outputs"]
        gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        self.device = f"cuda:{args.get('model_instance_device_id', '0')}" if gpu else "cpu"
        self.module = _load(folder / settings["file"], self.device)

    def execute(self, requests: list[Any]) -> list[Any]:
        import torch

        try:
            columns = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy()
                              for r in requests] for name in self.inputs}
            rows = [len(array) for array in columns[self.inputs[0]]]
            tensors = {name: torch.from_numpy(np.ascontiguousarray(np.concatenate(arrays)))
                       .to(self.device) for name, arrays in columns.items()}
            with torch.inference_mode():
                if len(tensors) == 1:
                    result = self.module(next(iter(tensors.values())))
                else:
                    result = self.module(**tensors)
            outputs = self._named(result)
        except Exception as exc:  # every request of the batch gets the reason
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for count in rows:
            tensors_out = [pb_utils.Tensor(name, np.ascontiguousarray(array[start:start + count]))
                           for name, array in outputs.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors_out))
            start += count
        return responses

    def _named(self, result: Any) -> dict[str, np.ndarray]:
        if isinstance(result, dict):
            pairs = list(result.items())
        elif isinstance(result, tuple | list):
            pairs = list(zip(self.outputs, result, strict=False))
        else:
            pairs = [(self.outputs[0], result)]
        return {name: tensor.detach().to("cpu").numpy() for name, tensor in pairs}


def _load(path: Path, device: str) -> Any:
    import torch

    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module().to(device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except RuntimeError:
        module = torch.load(str(path), map_location=device, weights_only=False)
    return module.eval()
