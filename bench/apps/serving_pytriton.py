"""The Triton baseline: the MLP bound into Triton Inference Server through nvidia-pytriton, with
Triton's dynamic batcher (max batch 64, max queue delay 2 ms). Triton answers V2 JSON at
``/v2/models/mlp/infer`` itself.

Runs in Triton's own environment (numpy<2, ENV.md), whose Python backend stub needs the
interpreter's libdir first on ``LD_LIBRARY_PATH`` (bench/serving_batching.py sets it):

    PY=.venv-triton/bin/python
    export LD_LIBRARY_PATH=$($PY -c 'import sysconfig;print(sysconfig.get_config_var("LIBDIR"))')
    taskset -c 0 $PY bench/apps/serving_pytriton.py --model mlp.pt --port 8000

Runs until SIGTERM or SIGINT; gRPC and metrics are off, so only the HTTP port is bound.
"""

from __future__ import annotations

import signal
from types import FrameType

import numpy as np
import torch
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from serving_model import IN, INPUT, MODEL, OUT, OUTPUT, arguments, load_mlp

MAX_BATCH, QUEUE_DELAY_US = 64, 2000


def main() -> None:
    args = arguments((__doc__ or "").splitlines()[0])
    model = load_mlp(args.model)

    @batch
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return {OUTPUT: model(torch.from_numpy(x)).numpy()}

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # Triton.serve() stops on it

    signal.signal(signal.SIGTERM, interrupt)
    config = TritonConfig(http_address=args.host, http_port=args.port, allow_grpc=False,
                          allow_metrics=False, allow_sagemaker=False, allow_vertex_ai=False)
    with Triton(config=config) as triton:
        triton.bind(model_name=MODEL, infer_func=infer,
                    inputs=[Tensor(name=INPUT, dtype=np.float32, shape=(IN,))],
                    outputs=[Tensor(name=OUTPUT, dtype=np.float32, shape=(OUT,))],
                    config=ModelConfig(max_batch_size=MAX_BATCH, batcher=DynamicBatcher(
                        max_queue_delay_microseconds=QUEUE_DELAY_US)))
        triton.serve()


if __name__ == "__main__":
    main()
