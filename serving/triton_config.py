"""Triton model configuration (``config.pbtxt``) from a sluice model's description.

The batching settings a user gives sluice (``max_batch``, ``latency_ms``) become Triton's
dynamic batcher settings, so a model handed to Triton batches under the same bounds; GPU
requests become ``KIND_GPU`` instance groups. The text is protobuf text format, and
:func:`parse_model_config` reads it back with Triton's own ``ModelConfig`` message (from the
``tritonclient`` package), which is how the tests prove a generated config valid.

    >>> spec = TritonModel("fraud", inputs=[Tensor("x", "FP32", (64,))],
    ...                    outputs=[Tensor("y", "FP32", (8,))], max_batch=64, latency_ms=2)
    >>> print(model_config(spec))
    name: "fraud"
    backend: "python"
    max_batch_size: 64
    input [
      { name: "x" data_type: TYPE_FP32 dims: [ 64 ] }
    ]
    output [
      { name: "y" data_type: TYPE_FP32 dims: [ 8 ] }
    ]
    dynamic_batching {
      max_queue_delay_microseconds: 2000
    }
    instance_group [
      { count: 1 kind: KIND_CPU }
    ]
    <BLANKLINE>
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.errors import SpecError

# V2 datatypes and Triton's names for them (BYTES is TYPE_STRING in a model config)
TRITON_TYPES = {
    "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32", "UINT64": "TYPE_UINT64", "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64", "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32", "FP64": "TYPE_FP64", "BYTES": "TYPE_STRING",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Tensor:
    """One input or output: its V2 datatype and its shape without the batch axis
    (``-1``: any length)."""

    name: str
    datatype: str
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise SpecError(f"tensor name {self.name!r}: letters, digits, '_', '.', '-'")
        if self.datatype not in TRITON_TYPES:
            raise SpecError(f"tensor {self.name!r}: datatype {self.datatype!r} is not one of "
                            f"{', '.join(TRITON_TYPES)}")
        if not self.dims or any(not isinstance(d, int) or d == 0 or d < -1 for d in self.dims):
            raise SpecError(f"tensor {self.name!r}: dims {list(self.dims)} must be positive "
                            "sizes or -1 (any), without the batch axis, e.g. [64]")


@dataclass(frozen=True)
class TritonModel:
    """What Triton needs to know to serve a model with its dynamic batcher."""

    name: str
    inputs: list[Tensor]
    outputs: list[Tensor]
    max_batch: int = 64
    latency_ms: float = 2.0  # the longest a request may wait in Triton's queue for a batch
    gpus: int = 0  # > 0: KIND_GPU instances on these many GPUs; 0: KIND_CPU
    instances: int = 1  # model instances per device (the batches in flight)
    backend: str = "python"  # or e.g. platform "pytorch_libtorch" for TorchScript
    platform: str | None = None
    preferred_batch: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise SpecError(f"model name {self.name!r}: letters, digits, '_', '.', '-'")
        if not self.inputs or not self.outputs:
            raise SpecError(f"model {self.name!r}: give at least one input and one output")
        if not 1 <= self.max_batch <= 1 << 20:
            raise SpecError(f"model {self.name!r}: max_batch must be from 1, got "
                            f"{self.max_batch}")
        if self.latency_ms < 0 or self.instances < 1 or self.gpus < 0:
            raise SpecError(f"model {self.name!r}: latency_ms >= 0, instances >= 1 and "
                            "gpus >= 0, please")
        bad = [b for b in self.preferred_batch if not 1 <= b <= self.max_batch]
        if bad:
            raise SpecError(f"model {self.name!r}: preferred batch sizes {bad} must be from 1 "
                            f"to max_batch ({self.max_batch})")


def _tensor(tensor: Tensor) -> str:
    dims = ", ".join(str(d) for d in tensor.dims)
    return (f"  {{ name: {json.dumps(tensor.name)} data_type: {TRITON_TYPES[tensor.datatype]} "
            f"dims: [ {dims} ] }}")


def model_config(model: TritonModel) -> str:
    """The ``config.pbtxt`` text for ``model``."""
    lines = [f"name: {json.dumps(model.name)}"]
    if model.platform:
        lines.append(f"platform: {json.dumps(model.platform)}")
    else:
        lines.append(f"backend: {json.dumps(model.backend)}")
    lines.append(f"max_batch_size: {model.max_batch}")
    lines += ["input ["] + [",\n".join(_tensor(t) for t in model.inputs)] + ["]"]
    lines += ["output ["] + [",\n".join(_tensor(t) for t in model.outputs)] + ["]"]
    lines.append("dynamic_batching {")
    if model.preferred_batch:
        sizes = ", ".join(str(b) for b in model.preferred_batch)
        lines.append(f"  preferred_batch_size: [ {sizes} ]")
    lines.append(f"  max_queue_delay_microseconds: {int(round(model.latency_ms * 1000))}")
    lines.append("}")
    if model.gpus:
        gpus = ", ".join(str(g) for g in range(model.gpus))
        group = f"  {{ count: {model.instances} kind: KIND_GPU gpus: [ {gpus} ] }}"
    else:
        group = f"  {{ count: {model.instances} kind: KIND_CPU }}"
    lines += ["instance_group [", group, "]"]
    return "\n".join(lines) + "\n"


def write_model_repository(root: Path, model: TritonModel, version_files: dict[str, bytes],
                           version: int = 1) -> Path:
    """``root/<name>/config.pbtxt`` and ``root/<name>/<version>/<files>``: Triton's layout."""
    folder = root / model.name
    (folder / str(version)).mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(model_config(model))
    for filename, data in version_files.items():
        if "/" in filename or filename in ("", ".", ".."):
            raise SpecError(f"model file name {filename!r}: a plain file name, e.g. model.py")
        (folder / str(version) / filename).write_bytes(data)
    return folder


def parse_model_config(text: str) -> Any:
    """Triton's ``ModelConfig`` message parsed from ``text`` (raises SpecError if invalid)."""
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, _model_config_module().ModelConfig())
    except text_format.ParseError as exc:
        raise SpecError(f"not a valid Triton model config: {exc}") from None


@functools.cache
def _model_config_module() -> Any:
    """tritonclient's generated ModelConfig module, loaded by file (once: protobuf keeps one
    descriptor per file) so that ``tritonclient.grpc`` and grpc, which clash with kserve's
    protos in one process (ENV.md), are never imported."""
    try:
        import tritonclient
    except ImportError:
        raise SpecError("checking a Triton config needs the tritonclient package") from None
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("sluice_triton_model_config_pb2", path)
    if spec is None or spec.loader is None:
        raise SpecError(f"cannot load Triton's ModelConfig from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
