"""The in-process torch backend: an exported program (``torch.export.save``, a ``.pt2`` file),
a TorchScript file, or a saved ``torch.nn.Module``, on CUDA when the spec asks for a GPU and
one exists, else on the CPU (with a warning when a GPU was asked for). A :class:`TorchModel`
is the ``run`` callable a :class:`~sluice.serving.Batcher` takes:

    >>> import asyncio, tempfile, pathlib, numpy as np, torch
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "linear.pt"
    >>> torch.save(torch.nn.Linear(2, 1, bias=False), path)
    >>> model = TorchModel.load(path, outputs=["y"])
    >>> model.device
    'cpu'
    >>> asyncio.run(model({"x": np.ones((3, 2), np.float32)}))["y"].shape
    (3, 1)

Forward runs under ``torch.inference_mode()``: through the batcher, on the event loop's thread
on the CPU and on a dedicated thread on a GPU (see :attr:`TorchModel.runs_inline`). A module
with one input is called with that tensor; with several, with them as keyword arguments. A
returned tensor is the first output name; a tuple or list maps in order; a dict keeps its
names.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from sluice.errors import ArtifactError, InferenceError

log = logging.getLogger("sluice.serving.torch")


def choose_device(gpus: int, cuda_available: bool) -> tuple[str, str | None]:
    """(device, warning): ``cuda`` only when a GPU is asked for and one exists.

    >>> choose_device(1, True), choose_device(0, True)
    (('cuda', None), ('cpu', None))
    >>> choose_device(1, False)[1]
    'the spec asks for 1 GPU but CUDA is not available here: serving on the CPU'
    """
    if gpus <= 0:
        return "cpu", None
    if cuda_available:
        return "cuda", None
    return "cpu", (f"the spec asks for {gpus} GPU{'s' if gpus > 1 else ''} but CUDA is not "
                   "available here: serving on the CPU")


class TorchModel:
    """A loaded torch module and how to call it; await it with a dict of numpy arrays."""

    def __init__(self, module: Any, device: str, inputs: Sequence[str] | None,
                 outputs: Sequence[str]) -> None:
        import torch

        self.module = module
        self.device = device
        self.inputs = list(inputs) if inputs else None
        self.outputs = list(outputs)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-torch")
        # the per-call path makes as few Python-level torch calls as it can: on an idle server
        # every call runs with cold caches, where each costs 10-20 us (a batch-of-one call of
        # the benchmark MLP, cold: about 355 us before, 300 after). One inference_mode object,
        # reused: calls come from one thread at a time (the event loop's for a CPU model,
        # the model's own thread otherwise)
        self._torch = torch
        self._inference = torch.inference_mode()
        self._on_cpu = device == "cpu"

    @classmethod
    def load(cls, path: str | Path, *, gpus: int = 0, inputs: Sequence[str] | None = None,
             outputs: Sequence[str] = ("output",)) -> TorchModel:
        """A ``.pt2`` file is an exported program (export it with a dynamic batch dimension);
        any other is tried as TorchScript, then as a pickled module (``torch.save``). A pickled
        module runs code when loaded: load only files from your own registry."""
        import torch

        device, warning = choose_device(gpus, torch.cuda.is_available())
        if warning:
            log.warning(warning)
        source = Path(path)
        if not source.is_file():
            raise ArtifactError(f"{source}: no such model file")
        if source.suffix == ".pt2":
            try:
                module = torch.export.load(str(source)).module().to(device)
            except Exception as exc:
                raise ArtifactError(f"{source.name} is not an exported torch program: "
                                    f"{type(exc).__name__}: {exc}") from None
        else:
            module = _load_scripted_or_pickled(source, device)
        if not isinstance(module, torch.nn.Module):
            raise ArtifactError(f"{source.name} holds a {type(module).__name__}, not a "
                                "torch.nn.Module (a state_dict needs its model class: save "
                                "the module, or script it)")
        if source.suffix != ".pt2":  # an exported program has no train mode to leave
            module.eval()
        return cls(module, device, inputs, outputs)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One forward pass, synchronously (the batcher calls it through :meth:`run_inline`,
        on the event loop's thread for a CPU model, on the model's own thread otherwise)."""
        names = self.inputs
        with self._inference:
            if names is not None and len(names) == 1:
                result = self.module(self._tensor(inputs[names[0]]))
            elif names is None and len(inputs) == 1:
                result = self.module(self._tensor(next(iter(inputs.values()))))
            else:
                result = self.module(**{name: self._tensor(array)
                                        for name, array in inputs.items()})
        return self._outputs(result)

    def _tensor(self, array: np.ndarray) -> Any:
        """The array as a tensor on the model's device (sharing its memory on the CPU)."""
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)
        tensor = self._torch.from_numpy(array)
        return tensor if self._on_cpu else tensor.to(self.device)

    def _outputs(self, result: Any) -> dict[str, np.ndarray]:
        if isinstance(result, self._torch.Tensor):
            # (force: detached and on the CPU, in one call)
            return {self.outputs[0]: result.numpy(force=True)}
        if isinstance(result, tuple | list):
            if len(result) > len(self.outputs):
                raise InferenceError(f"the model returned {len(result)} outputs; name them "
                                     f"all (outputs: {', '.join(self.outputs)})")
            pairs = list(zip(self.outputs, result, strict=False))
        elif isinstance(result, dict):
            pairs = list(result.items())
        else:
            raise InferenceError(f"the model returned {type(result).__name__}; a tensor, a "
                                 "tuple of tensors or a dict of them is expected")
        return {name: tensor.numpy(force=True) for name, tensor in pairs}

    async def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self.predict, inputs)

    async def run_timed(self, inputs: dict[str, np.ndarray]
                        ) -> tuple[dict[str, np.ndarray], float]:
        """The outputs and the seconds the forward pass took on the model's thread (what the
        batcher learns service times from: the event loop's own delays are not the model's).
        The batcher uses this on a GPU, so that the loop keeps serving while kernels run."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self.run_inline, inputs)

    @property
    def runs_inline(self) -> bool:
        """On the CPU the batcher calls :meth:`run_inline` from its own step, on the event
        loop's thread: torch's kernels use the cores either way, and on a thread of its own
        each of a module's Python-level steps would queue for the GIL behind a busy event loop
        (up to the 5 ms switch interval each), which makes a 0.1 ms forward take tens of
        milliseconds under load."""
        return self.device == "cpu"

    def run_inline(self, inputs: dict[str, np.ndarray]
                   ) -> tuple[dict[str, np.ndarray], float]:
        """The outputs and the seconds the forward pass took, here and now."""
        began = time.perf_counter()
        outputs = self.predict(inputs)
        return outputs, time.perf_counter() - began

    def close(self) -> None:
        self._thread.shutdown(wait=False)


def _load_scripted_or_pickled(source: Path, device: str) -> Any:
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.export, but it is what many model
            # stores and Triton's libtorch backend hold: it stays supported here
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(source), map_location=device)
    except RuntimeError as script_error:
        try:
            return torch.load(str(source), map_location=device, weights_only=False)
        except Exception as exc:
            raise ArtifactError(
                f"{source.name} is neither a TorchScript file ({script_error}) nor a saved "
                f"torch module ({type(exc).__name__}: {exc})") from None
