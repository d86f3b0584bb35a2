"""The Triton backend: a serving function hands inference to a Triton server over HTTP with
``tritonclient.http``, either a local server sluice starts for the model (its Python backend
runs the torch file; Triton's dynamic batcher takes the function's batching settings) or a
remote one at ``serving.triton_url`` that already serves the model.

A :class:`TritonBackend` is the ``run`` callable a :class:`~sluice.serving.Batcher` takes:
sluice's batcher still orders requests by deadline and sheds what cannot be served in time,
and keeps several calls in flight so that Triton's batcher has requests to merge.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sluice.errors import ArtifactError, InferenceError

from .triton_config import Tensor, TritonModel, write_model_repository
from .triton_server import LocalTriton, TritonEnv


class TritonBackend:
    """Await it with a dict of numpy arrays (batch axis first) for the model's outputs."""

    def __init__(self, url: str, model: str, version: str, inputs: Sequence[Tensor],
                 outputs: Sequence[Tensor], server: LocalTriton | None = None,
                 connections: int = 16) -> None:
        self.url = url
        self.model = model
        self.version = version  # "" for the server's latest
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.server = server  # the local server this backend started, stopped by close()
        self.connections = connections
        self._client: Any = None

    def _connect(self) -> Any:
        if self._client is None:  # an aiohttp session: made on the serving event loop
            import tritonclient.http.aio as triton_http

            self._client = triton_http.InferenceServerClient(
                self.url.removeprefix("http://"), conn_limit=self.connections)
        return self._client

    def check(self, timeout: float = 10.0) -> None:
        """The server has the model, ready, with the inputs and outputs the spec names (plain
        HTTP: it runs before the serving event loop takes requests)."""
        where = f"model {self.model!r} on the Triton server at {self.url}"
        route = f"{self.url}/v2/models/{self.model}"
        if self.version:
            route += f"/versions/{self.version}"
        try:
            with urllib.request.urlopen(route, timeout=timeout) as reply:
                metadata = json.loads(reply.read())
            with urllib.request.urlopen(f"{route}/ready", timeout=timeout):
                pass
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise ArtifactError(f"{where} is not ready: {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ArtifactError(f"{where}: cannot reach the server ({exc})") from None
        if not self.inputs or not self.outputs:  # the spec names none: take the server's
            try:
                self.inputs, self.outputs = ([Tensor(t["name"], t["datatype"],
                                                     tuple(t["shape"][1:]))
                                              for t in metadata[side]]
                                             for side in ("inputs", "outputs"))
            except (KeyError, TypeError, ValueError) as exc:
                raise ArtifactError(f"{where}: its metadata has no usable signature ({exc}); "
                                    "give serving.inputs and serving.outputs") from None
        for side, wanted in (("inputs", self.inputs), ("outputs", self.outputs)):
            served = {t["name"]: t["datatype"] for t in metadata.get(side, [])}
            for tensor in wanted:
                if served.get(tensor.name) != tensor.datatype:
                    raise ArtifactError(f"{where} has {side} {served}, but the spec names "
                                        f"{tensor.name!r} ({tensor.datatype})")

    async def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tritonclient.http.aio as triton_http
        from tritonclient.utils import InferenceServerException

        request = []
        for tensor in self.inputs:
            array = inputs[tensor.name]
            item = triton_http.InferInput(tensor.name, list(array.shape), tensor.datatype)
            item.set_data_from_numpy(array, binary_data=True)
            request.append(item)
        wanted = [triton_http.InferRequestedOutput(t.name, binary_data=True)
                  for t in self.outputs]
        try:
            result = await self._connect().infer(self.model, request, self.version,
                                                 outputs=wanted)
        except InferenceServerException as exc:
            raise InferenceError(f"Triton: {exc.message()}") from None
        return {tensor.name: result.as_numpy(tensor.name) for tensor in self.outputs}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self.server is not None:
            server, self.server = self.server, None
            server.stop()


def local_backend(model_file: Path, name: str, version: str, inputs: Sequence[Tensor],
                  outputs: Sequence[Tensor], workdir: Path, *, max_batch: int,
                  latency_ms: float, gpus: int = 0, instances: int = 1) -> TritonBackend:
    """Write a model repository for ``model_file`` (a torch file), start a local Triton server
    on it and return the backend that talks to it. Triton's dynamic batcher waits at most a
    tenth of the latency objective for a batch to fill (sluice's deadline holds the rest)."""
    repository = workdir / "models"
    shutil.rmtree(repository, ignore_errors=True)
    spec = TritonModel(name, list(inputs), list(outputs), max_batch=max_batch,
                       latency_ms=latency_ms / 10, gpus=gpus, instances=instances)
    suffix = model_file.suffix if model_file.suffix in (".pt", ".pt2", ".pth") else ".pt"
    filename = f"model{suffix}"
    settings = {"file": filename, "inputs": [t.name for t in inputs],
                "outputs": [t.name for t in outputs]}
    files = {"model.py": (Path(__file__).parent / "triton_model.py").read_bytes(),
             "sluice.json": json.dumps(settings).encode()}
    folder = write_model_repository(repository, spec, files, version=int(version))
    shutil.copyfile(model_file, folder / version / filename)
    server = LocalTriton(repository, workdir, TritonEnv.find())
    url = server.start()
    return TritonBackend(url, name, version, inputs, outputs, server=server,
                         connections=max(16, 2 * instances))
