"""A worker's Prometheus metrics, kept in the function's multiprocess directory so that any
worker answering ``GET /metrics`` reports the whole function (all workers, living and dead)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest, multiprocess

from sluice.tally import SHARED
from sluice.triggers.http.server import RequestMetrics


class WorkerMetrics:
    def __init__(self, function: str, trigger: str) -> None:
        self.requests = RequestMetrics(function, trigger)
        Counter("sluice_worker_starts", "Worker processes started (restarts included).",
                ["function"]).labels(function).inc()

    def page(self) -> bytes:
        SHARED.flush()  # this worker's latest counts; the others' are at most 0.5 s old
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
