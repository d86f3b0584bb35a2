"""A serving function end to end: a torch model pushed to the registry, deployed by reference,
answering Open Inference Protocol requests over the function's own port."""

from __future__ import annotations

import concurrent.futures
import json
import re
import socket

import httpx
import numpy as np
import pytest
import torch
import yaml

from tests.conftest import Daemon

pytestmark = pytest.mark.slow


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(),
                               torch.nn.Linear(512, 512), torch.nn.ReLU(),
                               torch.nn.Linear(512, 8)).eval()


def serving_spec(model: str) -> dict:
    return {"name": "fraud", "kind": "serving",
            "serving": {"model": model, "inputs": [{"name": "x", "dims": [64]}],
                        "outputs": [{"name": "scores", "dims": [8]}],
                        "max_batch": 64, "latency_ms": 200}}


def test_a_registry_model_served_over_v2(daemon: Daemon, tmp_path):
    module = mlp()
    torch.save(module, tmp_path / "mlp.pt")
    daemon.cli("models", "push", "fraud", str(tmp_path / "mlp.pt"), "--metrics", "auc=0.9")
    daemon.cli("models", "alias", "fraud", "production", "1")
    (tmp_path / "fraud.yaml").write_text(yaml.safe_dump(serving_spec("fraud@production")))
    deployed = json.loads(daemon.cli("deploy", str(tmp_path / "fraud.yaml"), "-o", "json").stdout)
    url = deployed["status"]["endpoint"]

    meta = httpx.get(f"{url}/v2/models/fraud").json()
    assert meta["versions"] == ["1"] and meta["inputs"][0]["shape"] == [-1, 64]
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}

    rows = np.random.default_rng(2).standard_normal((16, 64)).astype(np.float32)

    def infer(row: np.ndarray) -> list[float]:
        response = httpx.post(f"{url}/v2/models/fraud/infer", json={
            "inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                        "data": row.tolist()}]}, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["outputs"][0]["data"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(infer, rows))
    with torch.inference_mode():
        expected = module(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(np.array(answers), expected, rtol=1e-4, atol=1e-5)

    page = httpx.get(f"{url}/metrics").text
    assert 'sluice_inference_requests_total{model="fraud",status="200",version="1"} 16.0' in page
    assert 'sluice_batch_size_count{model="fraud",version="1"}' in page

    bad = httpx.post(f"{url}/v2/models/fraud/infer", json={
        "inputs": [{"name": "x", "shape": [1, 63], "datatype": "FP32", "data": [0.0] * 63}]})
    assert bad.status_code == 400
    assert "shape [1, 63], but model 'fraud' takes [-1, 64]" in bad.json()["error"]
    assert_pipelined_requests_are_answered_in_order(url, rows[0], expected[0])


def assert_pipelined_requests_are_answered_in_order(url: str, row, scores) -> None:
    """One write of six requests: those answered at once (health, metadata, a bad request)
    queue behind the infer, which waits for its batch; the answers keep the order."""
    def post(body: bytes) -> bytes:
        return (b"POST /v2/models/fraud/infer HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/json\r\nContent-Length: " + str(len(body)).encode() +
                b"\r\n\r\n" + body)

    def get(path: bytes) -> bytes:
        return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"

    good = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                   "data": row.tolist()}]}).encode()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(get(b"/v2/health/live") + post(good) + get(b"/v2/models/fraud")
                     + post(b'{"inputs": 3}') + get(b"/v2/health/ready") + get(b"/v2"))
        data = b""
        while data.count(b"HTTP/1.1 ") < 6 or not data.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed early after {data!r}"
            data += chunk
    assert re.findall(rb"HTTP/1.1 (\d{3})", data) == [b"200", b"200", b"200", b"400", b"200",
                                                     b"200"]
    bodies = [json.loads(part) for part in re.findall(rb"\r\n\r\n(\{.*?\})(?=HTTP/1.1 |$)",
                                                       data, re.S)]
    np.testing.assert_allclose(bodies[1]["outputs"][0]["data"], scores, rtol=1e-4, atol=1e-5)
    assert bodies[2]["name"] == "fraud" and "inputs" in bodies[3]["error"]
    assert bodies[5]["name"] == "sluice"


def test_a_model_that_cannot_be_resolved_fails_the_deploy(daemon: Daemon, tmp_path):
    (tmp_path / "ghost.yaml").write_text(yaml.safe_dump(serving_spec("ghost@production")))
    result = daemon.cli("deploy", str(tmp_path / "ghost.yaml"), check=False)
    assert result.returncode == 1
    assert "model 'ghost@production' could not be served" in result.stderr
    assert "no model named 'ghost'" in result.stderr


def test_moving_the_alias_swaps_versions_under_load_with_no_failed_request(daemon, tmp_path):
    import threading
    import time

    torch.manual_seed(0)
    first = torch.nn.Linear(4, 1)
    second = torch.nn.Linear(4, 1)
    torch.save(first, tmp_path / "v1.pt")
    torch.save(second, tmp_path / "v2.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a model")
    for name in ("v1.pt", "v2.pt"):
        daemon.cli("models", "push", "swap", str(tmp_path / name))
    daemon.cli("models", "alias", "swap", "production", "1")
    spec = {"name": "swap", "kind": "serving",
            "serving": {"model": "swap@production", "inputs": [{"name": "x", "dims": [4]}],
                        "outputs": [{"name": "y", "dims": [1]}], "reload_interval": 0.3,
                        "latency_ms": 2000}}
    (tmp_path / "swap.yaml").write_text(yaml.safe_dump(spec))
    url = json.loads(daemon.cli("deploy", str(tmp_path / "swap.yaml"), "-o", "json").stdout
                     )["status"]["endpoint"]
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                        "data": [1.0, 2.0, 3.0, 4.0]}]}
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                response = client.post(f"{url}/v2/models/swap/infer", json=body)
                seen.append((response.status_code, response.json().get("model_version", "")))

    workers = [threading.Thread(target=load) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)
        daemon.cli("models", "alias", "swap", "production", "2")
        deadline = time.monotonic() + 20
        while not any(version == "2" for _, version in seen[-10:]):
            assert time.monotonic() < deadline, "version 2 never served"
            time.sleep(0.1)
        daemon.cli("models", "push", "swap", str(tmp_path / "broken.pt"))
        daemon.cli("models", "alias", "swap", "production", "3")
        time.sleep(1.0)  # a few reload checks: version 3 cannot load
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    statuses = {status for status, _ in seen}
    assert statuses == {200}, [s for s in seen if s[0] != 200][:5]
    assert seen[0][1] == "1" and seen[-1][1] == "2"  # the broken version never took over
    logs = daemon.cli("logs", "swap", "--tail", "0").stdout
    assert "now serving version 2 (was 1)" in logs
    assert "moved to version 3, which cannot be served" in logs
    assert "version 2 keeps serving" in logs


def test_the_cli_serves_a_model_with_its_pushed_signature(daemon: Daemon, tmp_path):
    module = mlp()
    torch.save(module, tmp_path / "model.pt")
    daemon.cli("models", "push", "fraud", str(tmp_path / "model.pt"), "--metrics", "auc=0.93",
               "--inputs", "x:FP32:64", "--outputs", "scores:FP32:8")
    daemon.cli("models", "alias", "fraud", "production", "1")
    shown = daemon.cli("models", "show", "fraud@production").stdout
    assert "signature  x:FP32:64 -> scores:FP32:8" in shown
    deployed = json.loads(daemon.cli("deploy", "--name", "fraud", "--model", "fraud@production",
                                     "--batching", "max_batch=32,latency_ms=20",
                                     "-o", "json").stdout)
    assert deployed["spec"]["serving"]["max_batch"] == 32
    url = deployed["status"]["endpoint"]
    assert httpx.get(f"{url}/v2/models/fraud").json()["outputs"] == [
        {"name": "scores", "datatype": "FP32", "shape": [-1, 8]}]
    row = np.linspace(-1, 1, 64, dtype=np.float32)
    answer = httpx.post(f"{url}/v2/models/fraud/infer", json={"inputs": [
        {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": row.tolist()}]}).json()
    with torch.inference_mode():
        expected = module(torch.from_numpy(row[None])).numpy()[0]
    np.testing.assert_allclose(answer["outputs"][0]["data"], expected, rtol=1e-4, atol=1e-5)


def test_a_model_without_a_signature_needs_one_in_the_spec(daemon: Daemon, tmp_path):
    torch.save(mlp(), tmp_path / "model.pt")
    daemon.cli("models", "push", "bare", str(tmp_path / "model.pt"))
    result = daemon.cli("deploy", "--model", "bare:1", check=False)
    assert result.returncode == 1
    assert "was pushed without a signature and the spec names no tensors" in result.stderr


def test_kafka_messages_are_scored_through_the_same_batcher(daemon: Daemon, tmp_path):
    from tests.e2e.test_kafka import FAST_GROUP, broker_of, create_topic, produce, read_all

    module = mlp()
    torch.save(module, tmp_path / "model.pt")
    daemon.cli("models", "push", "fraud", str(tmp_path / "model.pt"),
               "--inputs", "x:FP32:64", "--outputs", "scores:FP32:8")
    bootstrap = broker_of(daemon)
    create_topic(bootstrap, "tx", 2)
    rng = np.random.default_rng(5)
    rows = rng.standard_normal((300, 64)).astype(np.float32)
    messages: list[tuple[str | None, object]] = [(f"tx-{i}", {"x": row.tolist()})
                                                 for i, row in enumerate(rows)]
    messages += [("no-x", {"y": [1.0]}), ("not-json", b"{oops")]
    produce(bootstrap, "tx", messages)
    deployed = json.loads(daemon.cli(
        "deploy", "--name", "fraud", "--model", "fraud:1", "--batching", "latency_ms=200",
        "--trigger", "http", "--trigger",
        f"kafka:topic=tx,output=tx-scores,content_type=application/json,{FAST_GROUP}",
        "-o", "json").stdout)

    scored = {r.key.decode(): json.loads(r.value)["scores"]
              for r in read_all(bootstrap, "tx-scores", 300)}
    assert len(scored) == 300
    with torch.inference_mode():
        expected = module(torch.from_numpy(rows)).numpy()
    got = np.array([scored[f"tx-{i}"] for i in range(300)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

    # bad messages are dead-lettered with the reason, and nothing else is lost
    dead = {r.key.decode(): dict(r.headers) for r in read_all(bootstrap, "fraud.dead-letter", 2)}
    assert b"the message has no 'x'" in dead["no-x"]["x-sluice-error"]
    assert b"not valid JSON" in dead["not-json"]["x-sluice-error"]

    # the messages went through the batcher in batches, not one by one
    page = httpx.get(f"{deployed['status']['endpoint']}/metrics").text
    count = float(next(line.split()[-1] for line in page.splitlines()
                       if line.startswith('sluice_batch_size_count{model="fraud"')))
    total = float(next(line.split()[-1] for line in page.splitlines()
                       if line.startswith('sluice_batch_size_sum{model="fraud"')))
    assert total == 300 and count < 300


KSERVE_MODEL = '''
import kserve
import numpy as np
import torch


class Fraud(kserve.Model):
    def __init__(self, name):
        super().__init__(name)
        self.ready = False

    def load(self):
        self.module = torch.load(self.model_path, weights_only=False)
        self.ready = True

    def preprocess(self, payload, headers=None):
        return torch.from_numpy(payload.inputs[0].as_numpy())

    def predict(self, x, headers=None):
        with torch.inference_mode():
            return {"scores": self.module(x).numpy(), "rows": np.full(len(x), len(x))}
'''


def test_a_kserve_model_in_the_handler_file_is_the_model(daemon: Daemon, tmp_path):
    import tritonclient.http as triton_http

    module = mlp()
    torch.save(module, tmp_path / "model.pt")
    daemon.cli("models", "push", "fraud", str(tmp_path / "model.pt"),
               "--inputs", "x:FP32:64", "--outputs", "scores:FP32:8")
    daemon.cli("models", "alias", "fraud", "production", "1")
    # predict takes 20 ms, so that concurrent callers queue behind a batch and share the next
    slow = KSERVE_MODEL.replace(
        "        with torch.inference_mode():\n            return {",
        "        __import__('time').sleep(0.02)\n        with torch.inference_mode():\n"
        "            return {")
    assert slow != KSERVE_MODEL
    (tmp_path / "serve.py").write_text(slow)
    deployed = json.loads(daemon.cli(
        "deploy", str(tmp_path / "serve.py"), "--name", "fraud", "--model", "fraud@production",
        "--batching", "max_batch=64,latency_ms=2000", "-o", "json").stdout)
    endpoint = deployed["status"]["endpoint"]
    client = triton_http.InferenceServerClient(endpoint.removeprefix("http://"))
    assert client.get_model_metadata("fraud")["platform"] == "kserve"

    rows = np.random.default_rng(6).standard_normal((24, 64)).astype(np.float32)

    with torch.inference_mode():
        expected = module(torch.from_numpy(rows)).numpy()
    x = triton_http.InferInput("x", [2, 64], "FP32")
    x.set_data_from_numpy(rows[:2], binary_data=True)  # tritonclient's binary tensors
    np.testing.assert_allclose(client.infer("fraud", [x]).as_numpy("scores"), expected[:2],
                               rtol=1e-4, atol=1e-5)

    def infer(row: np.ndarray) -> list[float]:  # concurrent callers (tritonclient's gevent
        response = httpx.post(f"{endpoint}/v2/models/fraud/infer", json={  # pool is not
            "inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",  # thread-safe)
                        "data": row.tolist()}]}, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["outputs"][0]["data"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = np.array(list(pool.map(infer, rows)))
    np.testing.assert_allclose(answers, expected, rtol=1e-4, atol=1e-5)
    # the requests reached predict together: some batches held several of them
    page = httpx.get(f"{endpoint}/metrics").text
    count = float(next(line.split()[-1] for line in page.splitlines()
                       if line.startswith('sluice_batch_size_count{model="fraud"')))
    assert count < 25  # 24 single rows and one of two, in fewer batches than requests


def test_a_kserve_model_that_fails_to_load_fails_the_deploy(daemon: Daemon, tmp_path):
    torch.save(mlp(), tmp_path / "model.pt")
    daemon.cli("models", "push", "fraud", str(tmp_path / "model.pt"),
               "--inputs", "x:FP32:64", "--outputs", "scores:FP32:8")
    (tmp_path / "serve.py").write_text(KSERVE_MODEL.replace(
        "self.module = torch.load", "raise RuntimeError('no weights for you'); torch.load"))
    result = daemon.cli("deploy", str(tmp_path / "serve.py"), "--model", "fraud:1",
                        check=False)
    assert result.returncode == 1
    assert "no weights for you" in result.stderr
