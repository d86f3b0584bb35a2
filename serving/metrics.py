"""A model server's Prometheus metrics: batch sizes, queue waits, compute times, and requests
by model, version and status. In a worker they land in the function's multiprocess directory
with its other metrics (``GET /metrics`` on the function's port)."""

from __future__ import annotations

from typing import Any

from .batcher import BatchStats

_TIMES = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
          2.5, 5, 10)


class ServingMetrics:
    """Instruments for one served model version (label children made once, off the hot path)."""

    def __init__(self, model: str, version: str, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        registry = registry or REGISTRY
        labels = (model, version)
        self.batch_size = Histogram(
            "sluice_batch_size", "Rows in each batch the model ran.", ["model", "version"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096), registry=registry,
        ).labels(*labels)
        self.queue_wait = Histogram(
            "sluice_batch_queue_wait_seconds", "Time a request waited for its batch to start.",
            ["model", "version"], buckets=_TIMES, registry=registry).labels(*labels)
        self.compute = Histogram(
            "sluice_batch_compute_seconds", "Time the model took for one batch.",
            ["model", "version"], buckets=_TIMES, registry=registry).labels(*labels)
        self.queued = Gauge(
            "sluice_batch_queued", "Requests waiting for a batch, at the last batch's start.",
            ["model", "version"], multiprocess_mode="livesum", registry=registry,
        ).labels(*labels)
        self._requests = Counter(
            "sluice_inference_requests", "Inference requests by model, version and status.",
            ["model", "version", "status"], registry=registry)
        self._labels = labels
        self._by_status: dict[int, Any] = {}

    def on_batch(self, stats: BatchStats, queued: int = 0) -> None:
        self.batch_size.observe(stats.rows)
        self.compute.observe(stats.compute)
        for wait in stats.waits:
            self.queue_wait.observe(wait)
        self.queued.set(queued)

    def count(self, status: int) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self._requests.labels(*self._labels, str(status))
        child.inc()
