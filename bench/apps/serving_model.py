"""The serving benchmark's model and its one request: an MLP 64->512->512->8 (fp32).

Shared by bench/serving_batching.py and the baseline servers under bench/apps/, including the
Triton one, which runs in Triton's own environment (numpy<2): so this module needs only torch
and the standard library.

    model = build_mlp()                    # fixed seed, eval mode
    save_mlp(model, path)                  # torch.save of the whole module (an nn.Sequential:
    model = load_mlp(path)                 # it loads without this module on the path)
    scores(model, [sample()])              # [[8 floats]]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

MODEL = "mlp"
INPUT, OUTPUT = "x", "scores"
IN, HIDDEN, OUT = 64, 512, 8
PATH = f"/v2/models/{MODEL}/infer"
SEED = 20240605


def build_mlp() -> torch.nn.Sequential:
    """The same weights on every run (seeded), in eval mode."""
    torch.manual_seed(SEED)
    model = torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.ReLU(),
                                torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
                                torch.nn.Linear(HIDDEN, OUT))
    return model.eval()


def save_mlp(model: torch.nn.Module, path: Path) -> Path:
    torch.save(model, path)
    return path


def load_mlp(path: str | Path) -> torch.nn.Module:
    """The saved module in eval mode, torch on one thread (every server gets one core)."""
    torch.set_num_threads(1)
    model: torch.nn.Module = torch.load(str(path), map_location="cpu", weights_only=False)
    return model.eval()


def scores(model: torch.nn.Module, rows: list[list[float]]) -> list[list[float]]:
    """The model's outputs for a batch of input rows."""
    with torch.inference_mode():
        out: list[list[float]] = model(torch.tensor(rows, dtype=torch.float32)).tolist()
    return out


def sample() -> list[float]:
    """The benchmark's one input row (every request sends it)."""
    rng = random.Random(SEED)
    return [round(rng.uniform(-1.0, 1.0), 6) for _ in range(IN)]


def request_body(row: list[float]) -> bytes:
    """An Open Inference Protocol (V2) request for one row."""
    return json.dumps({"inputs": [{"name": INPUT, "shape": [1, IN], "datatype": "FP32",
                                   "data": row}]}, separators=(",", ":")).encode()


def response_dict(row: list[float]) -> dict[str, object]:
    """A V2 response carrying one row of scores (the baselines serialise it with orjson)."""
    return {"model_name": MODEL, "outputs": [{"name": OUTPUT, "datatype": "FP32",
                                              "shape": [1, OUT], "data": row}]}


def answer_of(response: bytes) -> list[float]:
    """The scores in a V2 response (any server's: Triton adds fields, order varies)."""
    (output,) = [o for o in json.loads(response)["outputs"] if o["name"] == OUTPUT]
    data: list[float] = [float(v) for v in output["data"]]
    return data


def arguments(description: str) -> argparse.Namespace:
    """Every baseline server's command line: the saved model, and where to listen."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True, help="the saved MLP (torch.save)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    return parser.parse_args()
