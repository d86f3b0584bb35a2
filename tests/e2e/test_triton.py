"""The Triton backend on the real ``tritonserver`` binary (nvidia-pytriton's, in the Triton
environment `make` creates), and ``tritonclient.http`` as the client of a sluice function."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as triton_http
import yaml

from sluice.serving.triton_config import Tensor, TritonModel, parse_model_config
from sluice.serving.triton_server import LocalTriton, TritonEnv
from tests.conftest import Daemon

TRITON_ENV = Path(sys.prefix).parent / ".venv-triton"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (TRITON_ENV / "bin" / "python").exists(),
                       reason="Triton's environment (.venv-triton) is missing: `make test` "
                              "creates it with `make triton-env`"),
]


def mlp() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 8)).eval()


def spec(**serving: object) -> dict:
    return {"name": "fraud", "kind": "serving",
            "serving": {"inputs": [{"name": "x", "dims": [64]}],
                        "outputs": [{"name": "scores", "dims": [8]}],
                        "max_batch": 16, "latency_ms": 500, **serving}}


def deploy(daemon: Daemon, tmp_path: Path, body: dict, check: bool = True):
    path = tmp_path / f"{body['name']}.yaml"
    path.write_text(yaml.safe_dump(body))
    return daemon.cli("deploy", str(path), "-o", "json", check=check)


def client_for(endpoint: str) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(endpoint.removeprefix("http://"))


def infer(client: triton_http.InferenceServerClient, rows: np.ndarray, binary: bool,
          version: str = "") -> np.ndarray:
    x = triton_http.InferInput("x", list(rows.shape), "FP32")
    x.set_data_from_numpy(rows, binary_data=binary)
    out = triton_http.InferRequestedOutput("scores", binary_data=binary)
    return client.infer("fraud", [x], model_version=version, outputs=[out]).as_numpy("scores")


def test_a_registry_model_served_by_a_local_triton_server(daemon: Daemon, tmp_path):
    module = mlp()
    torch.save(module, tmp_path / "mlp.pt")
    daemon.cli("models", "push", "fraud", str(tmp_path / "mlp.pt"))
    daemon.cli("models", "alias", "fraud", "production", "1")
    deployed = json.loads(deploy(daemon, tmp_path,
                                 spec(model="fraud@production", backend="triton")).stdout)
    client = client_for(deployed["status"]["endpoint"])

    # tritonclient against the sluice function: health, metadata, infer (binary and JSON)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("fraud") and client.is_model_ready("fraud", "1")
    metadata = client.get_model_metadata("fraud")
    assert metadata["versions"] == ["1"] and metadata["platform"] == "triton"
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    rows = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32)
    with torch.inference_mode():
        expected = module(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(infer(client, rows, binary=True), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(infer(client, rows[:2], binary=False, version="1"),
                               expected[:2], rtol=1e-4, atol=1e-5)

    # the server sluice started runs a repository whose config is Triton's, with the batching
    # settings; its dynamic batcher may wait a tenth of the latency objective (500 ms)
    configs = list(daemon.home.rglob("triton/fraud-1/models/fraud/config.pbtxt"))
    assert len(configs) == 1
    config = parse_model_config(configs[0].read_text())
    assert config.max_batch_size == 16 and config.backend == "python"
    assert config.dynamic_batching.max_queue_delay_microseconds == 50_000
    assert config.instance_group[0].kind == config.instance_group[0].KIND_CPU

    # errors come back as tritonclient raises them, with sluice's message
    with pytest.raises(triton_http.InferenceServerException, match="shape \\[2, 63\\]"):
        infer(client, np.zeros((2, 63), np.float32), binary=True)
    with pytest.raises(triton_http.InferenceServerException, match="no version '7'"):
        infer(client, rows, binary=True, version="7")

    # removing the function stops its Triton server
    repository = str(configs[0].parent.parent)
    assert len(servers_on(repository)) == 1
    daemon.cli("delete", "fraud")
    deadline = time.monotonic() + 20
    while servers_on(repository) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert servers_on(repository) == []


def servers_on(repository: str) -> list[int]:
    """The pids of tritonserver processes serving ``repository``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if command[0].endswith(b"tritonserver") and \
                f"--model-repository={repository}".encode() in command:
            found.append(int(proc.name))
    return found


@pytest.fixture
def remote_triton(tmp_path):
    """A Triton server sluice did not start, serving `fraud` version 2 from a repository."""
    module = mlp()
    model = TritonModel("fraud", [Tensor("x", "FP32", (64,))], [Tensor("scores", "FP32", (8,))],
                        max_batch=8, latency_ms=1)
    folder = tmp_path / "repository" / "fraud"
    (folder / "2").mkdir(parents=True)
    from sluice.serving.triton_config import model_config

    (folder / "config.pbtxt").write_text(model_config(model))
    (folder / "2" / "model.py").write_bytes(
        (Path(__file__).parents[2] / "serving" / "triton_model.py").read_bytes())
    (folder / "2" / "sluice.json").write_text(
        json.dumps({"file": "model.pt", "inputs": ["x"], "outputs": ["scores"]}))
    torch.save(module, folder / "2" / "model.pt")
    server = LocalTriton(tmp_path / "repository", tmp_path / "triton", TritonEnv.find(TRITON_ENV))
    server.start()
    yield server, module
    server.stop()


def test_a_remote_triton_server_behind_a_sluice_function(daemon: Daemon, tmp_path,
                                                         remote_triton):
    server, module = remote_triton
    deployed = json.loads(deploy(daemon, tmp_path,
                                 spec(model="fraud:2", triton_url=server.url)).stdout)
    client = client_for(deployed["status"]["endpoint"])
    rows = np.random.default_rng(4).standard_normal((3, 64)).astype(np.float32)
    with torch.inference_mode():
        expected = module(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(infer(client, rows, binary=True), expected, rtol=1e-4, atol=1e-5)

    # a spec that does not match what the server serves fails the deploy, saying what differs
    wrong = spec(model="fraud:2", triton_url=server.url)
    wrong["name"] = "mismatch"
    wrong["serving"]["outputs"] = [{"name": "probability", "dims": [8]}]
    result = deploy(daemon, tmp_path, wrong, check=False)
    assert result.returncode == 1
    assert "but the spec names 'probability'" in result.stderr
