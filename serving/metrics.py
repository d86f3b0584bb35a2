"""A model server's Prometheus metrics: batch sizes, queue waits, compute times, and requests
by model, version and status. In a worker they land in the function's multiprocess directory
with its other metrics (``GET /metrics`` on the function's port)."""

from __future__ import annotations

from typing import Any

from sluice.tally import SHARED

from .batcher import BatchStats

_TIMES = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
          2.5, 5, 10)


_FAMILIES: dict[int, dict[str, Any]] = {}


def _families(registry: Any) -> dict[str, Any]:
    """The metric families, made once per registry: a swapped-in model version adds label
    children, not new families (a registry refuses a family twice)."""
    from prometheus_client import Counter, Gauge, Histogram

    made = _FAMILIES.get(id(registry))
    if made is None:
        labels = ["model", "version"]
        made = _FAMILIES[id(registry)] = {
            "batch_size": Histogram(
                "sluice_batch_size", "Rows in each batch the model ran.", labels,
                buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096), registry=registry),
            "queue_wait": Histogram(
                "sluice_batch_queue_wait_seconds", "Time a request waited for its batch to "
                "start.", labels, buckets=_TIMES, registry=registry),
            "compute": Histogram(
                "sluice_batch_compute_seconds", "Time the model took for one batch.", labels,
                buckets=_TIMES, registry=registry),
            "queued": Gauge(
                "sluice_batch_queued", "Requests waiting for a batch, at the last batch's "
                "start.", labels, multiprocess_mode="livesum", registry=registry),
            "requests": Counter(
                "sluice_inference_requests", "Inference requests by model, version and "
                "status.", [*labels, "status"], registry=registry),
        }
    return made


class ServingMetrics:
    """Instruments for one served model version (label children made once, off the hot path;
    updates go through the worker's tally, sluice.tally)."""

    def __init__(self, model: str, version: str, registry: Any = None) -> None:
        from prometheus_client import REGISTRY

        families = _families(registry or REGISTRY)
        labels = (model, version)
        self.batch_size = families["batch_size"].labels(*labels)
        self.queue_wait = families["queue_wait"].labels(*labels)
        self.compute = families["compute"].labels(*labels)
        self.queued = families["queued"].labels(*labels)
        self._requests = families["requests"]
        self._labels = labels
        self._by_status: dict[int, Any] = {}

    def on_batch(self, stats: BatchStats, queued: int = 0) -> None:
        SHARED.observe(self.batch_size, stats.rows)
        SHARED.observe(self.compute, stats.compute)
        for wait in stats.waits:
            SHARED.observe(self.queue_wait, wait)
        SHARED.set(self.queued, queued)

    def count(self, status: int) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self._requests.labels(*self._labels, str(status))
        SHARED.inc(child)
