"""Save a small torch model to serve: the MLP 64 -> 512 -> 512 -> 8 of the serving benchmark.

    python examples/serving/make_mlp.py mlp.pt
"""

import sys

import torch


def main(path: str) -> None:
    torch.manual_seed(0)  # the same weights every time
    model = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(),
                                torch.nn.Linear(512, 512), torch.nn.ReLU(),
                                torch.nn.Linear(512, 8)).eval()
    torch.save(model, path)
    print(f"saved {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mlp.pt")
