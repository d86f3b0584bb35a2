"""The KServe backend: a ``kserve.Model`` subclass in the handler module is the model.

What a user writes, in ``serve.py``, deployed with
``sluice deploy serve.py --kind serving --model fraud@production``::

    import kserve, numpy as np

    class Fraud(kserve.Model):
        def __init__(self, name):
            super().__init__(name)
            self.ready = False

        def load(self):                          # or async def
            self.weights = np.load(self.model_path)
            self.ready = True

        def predict(self, payload, headers=None):   # or async def
            x = payload.inputs[0].as_numpy()     # a batch: several requests' rows
            return x @ self.weights              # one row out per row in

``preprocess`` and ``postprocess`` may be overridden too (kserve's own pass the value
through). The contract:

- The class is built as ``Fraud(name)`` with the model's name. Then ``self.model_path`` is
  the registry artifact as a :class:`pathlib.Path`, already fetched and checked against its
  sha256 (it is also in the environment as ``SLUICE_MODEL_PATH``, set before the class is
  built), and ``load()`` runs. ``load()`` must end with ``self.ready = True``; a ``load()``
  that raises or leaves ``ready`` false fails the deploy, with the reason.
- Each call gets a real ``kserve.InferRequest`` whose inputs hold the batch: the batcher
  concatenates concurrent requests along axis 0, so with ``max_batch`` above 1 ``predict``
  sees the rows of several requests and must answer with the same number of rows, row *i*
  for input row *i*; the rows are split back to their callers. Read tensors with
  ``as_numpy()`` (or ``kserve.utils.utils.get_predict_input``): numeric ones travel as binary
  data, as in KServe's gRPC path, so their ``InferInput.data`` is ``None``; BYTES ones as
  KServe's REST server gives them, ``data`` a list of str (bytes when not UTF-8).
  ``headers`` is an empty dict.
- What comes back (from ``postprocess``) may be an ``InferResponse``, a dict of output name
  to array or list, or one array or list, which becomes the first output the serving spec
  declares. Anything else is an :class:`~sluice.errors.InferenceError`.
- Each method may be sync or ``async def``. Sync ones run on one dedicated thread (the one
  that ran ``load()``), so the event loop keeps serving; async ones run on the event loop and
  must not block it. An async ``load()`` runs to completion on that thread's own short-lived
  event loop: make loop-bound objects (client sessions) in ``predict``, not in ``load()``.
- An exception from ``preprocess``, ``predict`` or ``postprocess`` reaches the callers of
  that batch (HTTP 500 with the reason) and the next call is served as usual.

kserve's own ``Model.__call__`` (validation, routing to a remote predictor, its metrics) is
not used: sluice calls the three methods itself. ``import kserve`` parses ``sys.argv`` when
it is first imported (``kserve/model_server.py``), so a worker started with ``--config`` (an
abbreviation of kserve's ``--configure_logging``) exits: call :func:`import_kserve` before
importing a handler module that imports kserve.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from sluice.errors import ArtifactError, HandlerError, InferenceError

from .protocol import datatype_of

__all__ = ["MODEL_PATH_ENV", "KServeModel", "find_model_class", "import_kserve"]

log = logging.getLogger("sluice.serving.kserve")

MODEL_PATH_ENV = "SLUICE_MODEL_PATH"

# One step of preprocess -> predict -> postprocess: (value, headers, response headers) -> value
_Step = Callable[[Any, dict[str, str], dict[str, str]], Any]


def import_kserve() -> ModuleType:
    """``kserve``, imported with ``sys.argv`` hidden from it (its model server parses the
    command line at import time and exits on arguments it misreads as its own); later
    ``import kserve`` statements get this module."""
    if "kserve" in sys.modules:
        return sys.modules["kserve"]
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import kserve
    finally:
        sys.argv = argv
    return kserve


def find_model_class(module: ModuleType, name: str | None = None) -> type:
    """The ``kserve.Model`` subclass named ``name`` in ``module``, or, without a name, the one
    subclass defined in ``module`` itself (classes it imports do not count)."""
    model_base = import_kserve().Model
    where = module.__name__
    if name is not None:
        found = vars(module).get(name)
        if isinstance(found, type) and issubclass(found, model_base):
            return found
        what = "is not defined" if found is None else f"is a {type(found).__name__}"
        raise HandlerError(f"{where}:{name} {what}; the handler must name a kserve.Model "
                           f"subclass in {where}")
    defined = [value for value in vars(module).values()
               if isinstance(value, type) and issubclass(value, model_base)
               and value is not model_base and value.__module__ == where]
    if len(defined) == 1:
        return defined[0]
    if not defined:
        raise HandlerError(f"{where} defines no kserve.Model subclass: write one "
                           f"(class Fraud(kserve.Model) with load and predict) or name an "
                           f"imported one with the handler '{where}:ClassName'")
    names = [cls.__name__ for cls in defined]
    raise HandlerError(f"{where} defines {len(defined)} kserve.Model subclasses "
                       f"({', '.join(names)}): choose one with the handler "
                       f"'{where}:{names[-1]}'")


@dataclass(frozen=True)
class _Stage:
    """Consecutive steps that run together: one async step on the event loop, or sync steps
    chained in one trip to the model's thread."""

    is_async: bool
    steps: tuple[_Step, ...]


class KServeModel:
    """A loaded ``kserve.Model`` instance as a sluice model: await it with a dict of numpy
    arrays (batched on axis 0) and get one back.

    >>> import asyncio, kserve, tempfile, pathlib, numpy as np
    >>> class Scale(kserve.Model):
    ...     def load(self):
    ...         self.factor = np.load(self.model_path)
    ...         self.ready = True
    ...     def predict(self, payload, headers=None):
    ...         return payload.inputs[0].as_numpy() * self.factor
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "factor.npy"
    >>> np.save(path, np.float32(3))
    >>> model = KServeModel.load(Scale, path, name="scale", outputs=["y"])
    >>> asyncio.run(model({"x": np.array([[1, 2], [3, 4]], np.float32)}))["y"]
    array([[ 3.,  6.],
           [ 9., 12.]], dtype=float32)
    >>> model.close()
    """

    def __init__(self, model: Any, outputs: Sequence[str],
                 thread: ThreadPoolExecutor | None = None) -> None:
        if not outputs:
            raise ValueError("a kserve model needs the serving spec's output names")
        self.model = model
        self.outputs = list(outputs)
        self._thread = thread or ThreadPoolExecutor(max_workers=1,
                                                    thread_name_prefix="sluice-kserve")
        self._stages = _stages(model)

    @classmethod
    def load(cls, model_class: type[Any], path: str | Path, *, name: str,
             outputs: Sequence[str]) -> KServeModel:
        """Build ``model_class(name)``, give it ``model_path`` and run its ``load()``, on the
        thread that will run its sync methods; HandlerError or ArtifactError say why not."""
        if model_class.predict is import_kserve().Model.predict:  # kserve's forwards it
            raise HandlerError(f"{model_class.__name__} does not define predict(self, payload, "
                               "headers=None); kserve's own sends the request to a remote "
                               "predictor, which a sluice model does not have")
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-kserve")
        try:
            model = thread.submit(_build, model_class, name, Path(path)).result()
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(model, outputs, thread)

    async def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        headers: dict[str, str] = {}
        response_headers: dict[str, str] = {}
        value: Any = self.request(inputs)
        loop = asyncio.get_running_loop()
        for stage in self._stages:
            if stage.is_async:
                value = await stage.steps[0](value, headers, response_headers)
            else:
                value = await loop.run_in_executor(self._thread, _chain, stage.steps, value,
                                                   headers, response_headers)
        return self.outputs_of(value)

    def request(self, inputs: dict[str, np.ndarray]) -> Any:
        """The batch as a ``kserve.InferRequest`` (one input per tensor, all rows)."""
        from kserve.protocol.infer_type import InferInput, InferRequest

        tensors = []
        for name, array in inputs.items():
            datatype = datatype_of(array.dtype)
            if datatype != "BYTES":  # kserve reads binary data back in native byte order
                array = np.ascontiguousarray(array, array.dtype.newbyteorder("="))
            tensors.append(_tensor(InferInput(name, list(array.shape), datatype), array))
        return InferRequest(self.model.name, tensors, request_id=uuid.uuid4().hex)

    def outputs_of(self, result: Any) -> dict[str, np.ndarray]:
        """What the model returned as named arrays, or InferenceError saying what it was."""
        from kserve.protocol.infer_type import InferResponse

        if isinstance(result, InferResponse):
            try:
                return {output.name: output.as_numpy() for output in result.outputs}
            except Exception as exc:
                raise InferenceError(f"{self._label} returned an InferResponse whose outputs "
                                     f"cannot be read as arrays: {exc}") from exc
        if isinstance(result, dict):
            named = {}
            for name, value in result.items():
                if not isinstance(name, str):
                    raise InferenceError(f"{self._label} returned a dict with key {name!r}; "
                                         "its keys must be output names (str)")
                named[name] = self._array(name, value)
            if not named:
                raise InferenceError(f"{self._label} returned an empty dict; name at least "
                                     f"one output (the spec's: {', '.join(self.outputs)})")
            return named
        if isinstance(result, np.ndarray | list):
            return {self.outputs[0]: self._array(self.outputs[0], result)}
        raise InferenceError(
            f"{self._label} returned {type(result).__name__}; expected a "
            "kserve.InferResponse, a dict of output names to arrays or lists, or an array or "
            f"list (which becomes output {self.outputs[0]!r})")

    def _array(self, name: str, value: Any) -> np.ndarray:
        if not isinstance(value, np.ndarray | list | tuple):
            raise InferenceError(f"{self._label} returned output {name!r} as "
                                 f"{type(value).__name__}; an array or list is expected")
        try:
            array = np.asarray(value)
        except ValueError as exc:  # ragged nested lists
            raise InferenceError(f"{self._label} returned output {name!r} as a list that is "
                                 f"not a regular array: {exc}") from exc
        if array.ndim == 0:
            raise InferenceError(f"{self._label} returned output {name!r} as a scalar; "
                                 "outputs keep the batch axis (one row per input row)")
        return array

    @property
    def _label(self) -> str:
        return type(self.model).__name__

    def close(self) -> None:
        """Run the model's ``stop()`` (kserve's teardown hook) and release its thread."""
        try:
            self._thread.submit(lambda: _finish(self.model.stop())).result()
        except Exception:
            log.exception("%s.stop() failed", self._label)
        self._thread.shutdown(wait=False)


def _tensor(tensor: Any, array: np.ndarray) -> Any:
    """``array`` into kserve's ``InferInput``: numbers as binary data (kserve's gRPC path;
    ``as_numpy()`` reads them), BYTES as kserve's REST server hands them over, ``data`` a flat
    list of str (which ``get_predict_input`` needs), or as binary bytes when not UTF-8."""
    try:
        if tensor.datatype == "BYTES":
            try:
                tensor.set_data_from_numpy(array, binary_data=False)
                return tensor
            except Exception:  # kserve's own InferenceError: not UTF-8, JSON cannot hold it
                pass
        tensor.set_data_from_numpy(array, binary_data=True)
    except Exception as exc:
        raise InferenceError(f"input {tensor.name!r} ({tensor.datatype}, shape "
                             f"{list(array.shape)}) cannot be put in a kserve InferRequest: "
                             f"{exc}") from exc
    return tensor


def _build(model_class: type, name: str, path: Path) -> Any:
    """Construct and load, on the model's thread."""
    label = model_class.__name__
    os.environ[MODEL_PATH_ENV] = str(path)  # for code that reads it while being built
    try:
        model = model_class(name)
    except Exception as exc:
        raise HandlerError(f"{label}({name!r}) failed: {type(exc).__name__}: {exc}") from exc
    model.model_path = path
    try:
        _finish(model.load())
    except Exception as exc:
        raise ArtifactError(f"{label}.load() failed on {path.name}: "
                            f"{type(exc).__name__}: {exc}") from exc
    if getattr(model, "ready", False) is not True:
        raise ArtifactError(f"{label}.load() returned but the model is not ready: set "
                            "self.ready = True at the end of load() once it can predict")
    return model


def _finish(result: Any) -> None:
    """Run a coroutine that a sync-or-async hook returned to its end (on the model's thread,
    which has no running event loop)."""
    if inspect.iscoroutine(result):
        asyncio.run(result)


def _stages(model: Any) -> tuple[_Stage, ...]:
    """preprocess -> predict -> postprocess as stages; consecutive sync methods share one
    trip to the thread. Models built with ``return_response_headers=True`` get kserve's third
    argument (a dict for response headers) in predict and postprocess, as kserve passes it."""
    extra = bool(getattr(model, "required_response_headers", False))

    def pre(value: Any, headers: dict[str, str], out: dict[str, str]) -> Any:
        return model.preprocess(value, headers)

    def predict(value: Any, headers: dict[str, str], out: dict[str, str]) -> Any:
        return model.predict(value, headers, out) if extra else model.predict(value, headers)

    def post(value: Any, headers: dict[str, str], out: dict[str, str]) -> Any:
        if extra:
            return model.postprocess(value, headers, out)
        return model.postprocess(value, headers)

    stages: list[_Stage] = []
    for step, method in ((pre, model.preprocess), (predict, model.predict),
                         (post, model.postprocess)):
        if inspect.iscoroutinefunction(method):
            stages.append(_Stage(True, (step,)))
        elif stages and not stages[-1].is_async:
            stages[-1] = _Stage(False, (*stages[-1].steps, step))
        else:
            stages.append(_Stage(False, (step,)))
    return tuple(stages)


def _chain(steps: tuple[_Step, ...], value: Any, headers: dict[str, str],
           response_headers: dict[str, str]) -> Any:
    for step in steps:
        value = step(value, headers, response_headers)
    return value
