"""A KServe model served by sluice: the class below is the model (kserve.Model's contract).

    sluice deploy examples/serving/serve.py --name mlp-kserve --model mlp@production

sluice builds ``Scorer(name)``, sets ``model_path`` to the registry's file (fetched and checked
against its sha256) and calls ``load()``. Each ``predict`` gets a kserve InferRequest holding a
batch: the rows of every request the batcher merged, one output row per input row.
"""

import kserve
import torch


class Scorer(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = False

    def load(self) -> None:
        self.module = torch.load(self.model_path, weights_only=False).eval()
        self.ready = True

    def preprocess(self, payload, headers=None):
        return torch.from_numpy(payload.inputs[0].as_numpy().copy())

    def predict(self, x, headers=None):
        with torch.inference_mode():
            return torch.softmax(self.module(x), dim=1).numpy()  # probabilities, not logits
