"""The platform's own Prometheus metrics (the daemon's registry; workers keep their own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
RUNS = Counter(
    "sluice_runs", "Job runs finished, by trigger (manual, api, cron) and final status.",
    ["function", "trigger", "status"], registry=REGISTRY,
)
RUN_DURATION = Histogram(
    "sluice_run_duration_seconds", "Job run durations (first start to end, retries included).",
    ["function", "status"], registry=REGISTRY,
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600),
)
RUNS_RUNNING = Gauge(
    "sluice_runs_running", "Job runs now running or waiting to retry.", ["function"],
    registry=REGISTRY,
)
SCALINGS = Counter(
    "sluice_autoscale_scalings", "Replica changes the autoscaler decided, by direction.",
    ["function", "direction"], registry=REGISTRY,
)
