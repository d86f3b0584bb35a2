"""The platform's own Prometheus metrics (the daemon's registry; workers keep their own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry()

WORKER_RESTARTS = Counter(
    "sluice_worker_restarts", "Worker processes restarted after they exited.",
    ["function"], registry=REGISTRY,
)
DEPLOYS = Counter(
    "sluice_deploys", "Deploys by outcome.", ["outcome"], registry=REGISTRY,
)
FUNCTIONS = Gauge(
    "sluice_functions", "Deployed functions by state.", ["state"], registry=REGISTRY,
)
API_REQUESTS = Counter(
    "sluice_api_requests", "Platform API requests by method and status.",
    ["method", "status"], registry=REGISTRY,
)
