"""The torch backend behind the batcher: batched answers equal one-at-a-time forwards.

CUDA is not on this machine: the GPU path is the same code with device 'cuda' (choose_device
is tested as a table; a lent GPU machine runs the rest)."""

from __future__ import annotations

import doctest
import warnings

import numpy as np
import pytest
import torch

import sluice.serving.torch_backend
from sluice.errors import ArtifactError, InferenceError
from sluice.serving.torch_backend import TorchModel, choose_device
from tests.conftest import submit_concurrently


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(),
                               torch.nn.Linear(512, 512), torch.nn.ReLU(),
                               torch.nn.Linear(512, 8)).eval()


def test_doctest():
    assert doctest.testmod(sluice.serving.torch_backend).failed == 0


@pytest.mark.parametrize(("gpus", "cuda", "device", "warns"), [
    (0, False, "cpu", False), (0, True, "cpu", False), (1, True, "cuda", False),
    (2, False, "cpu", True),
])
def test_device_choice(gpus, cuda, device, warns):
    chosen, warning = choose_device(gpus, cuda)
    assert chosen == device and (warning is not None) == warns


def save_script(module: torch.nn.Module, path) -> None:
    with warnings.catch_warnings():  # TorchScript is deprecated, and still what users have
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module), path)


@pytest.mark.parametrize("kind", ["exported", "torchscript", "pickled module"])
def test_batched_answers_equal_single_forwards(tmp_path, kind):
    module = mlp()
    path = tmp_path / ("mlp.pt2" if kind == "exported" else "mlp.pt")
    if kind == "exported":
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.export.save(torch.export.export(module, (torch.randn(2, 64),),
                                              dynamic_shapes=({0: batch},)), path)
    elif kind == "torchscript":
        save_script(module, path)
    else:
        torch.save(module, path)
    model = TorchModel.load(path, outputs=["scores"])
    rng = np.random.default_rng(1)
    requests = [rng.standard_normal((1, 64)).astype(np.float32) for _ in range(40)]

    results = submit_concurrently(model, requests)
    with torch.inference_mode():
        expected = [module(torch.from_numpy(x)).numpy() for x in requests]
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(got["scores"], want, rtol=1e-5, atol=1e-6)
    model.close()


def test_multiple_outputs_are_named_in_order(tmp_path):
    class Two(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x * 2, x.sum(dim=1)

    path = tmp_path / "two.pt"
    save_script(Two(), path)
    model = TorchModel.load(path, outputs=["double", "total"])
    out = model.predict({"x": np.ones((2, 3), np.float32)})
    assert out["double"].tolist() == [[2.0] * 3] * 2 and out["total"].tolist() == [3.0, 3.0]
    narrow = TorchModel.load(path, outputs=["double"])
    with pytest.raises(InferenceError, match="returned 2 outputs; name them all"):
        narrow.predict({"x": np.ones((2, 3), np.float32)})


def test_files_that_are_not_modules_are_refused(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="neither a TorchScript file"):
        TorchModel.load(junk)
    weights = tmp_path / "weights.pt"
    torch.save(mlp().state_dict(), weights)
    with pytest.raises(ArtifactError, match="not a torch.nn.Module"):
        TorchModel.load(weights)
    with pytest.raises(ArtifactError, match="no such model file"):
        TorchModel.load(tmp_path / "missing.pt")
    (tmp_path / "bad.pt2").write_bytes(b"not an archive")
    with pytest.raises(ArtifactError, match="not an exported torch program"):
        TorchModel.load(tmp_path / "bad.pt2")
