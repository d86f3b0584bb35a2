"""What the supervisor tells a worker process (plain JSON: the worker does not import pydantic)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# exit codes a worker uses to tell the supervisor why it stopped
EXIT_OK = 0
EXIT_STARTUP_FAILED = 3
EXIT_RECYCLED = 75  # a handler overran its timeout; restart at once, no back-off


@dataclass(frozen=True)
class WorkerConfig:
    function: str
    handler: str
    source_dir: str | None
    worker_id: int = 0
    generation: int = 1
    timeout: float = 60.0
    env: dict[str, str] = field(default_factory=dict)
    # the HTTP trigger: an inherited listening socket (fd) or a port to bind (standalone);
    # reuse_port: bind it with SO_REUSEPORT beside the function's other workers (on Ray, where
    # nothing is inherited from the platform, which holds the port bound the same way)
    http_trigger: str | None = "http"
    listen_fd: int | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    reuse_port: bool = False
    max_request_body_size: int = 4 * 1024 * 1024
    max_inflight: int = 256
    max_connections: int = 10_000
    batch_size: int = 0
    batch_timeout: float = 0.01
    idle_timeout: float = 60.0
    drain_timeout: float = 30.0
    # talking to the supervisor: we write JSON lines to control_fd; EOF on parent_fd means it died
    control_fd: int | None = None
    parent_fd: int | None = None
    platform_url: str | None = None
    metrics_dir: str | None = None
    trigger_token: str | None = None  # proves an HTTP request is the platform's (cron) delivery
    # one sluice.triggers.kafka.settings.KafkaSettings (as a dict) per Kafka trigger
    kafka: list[dict[str, Any]] = field(default_factory=list)
    # a serving function: its spec.serving (as a dict), where the registry is, GPUs asked for
    serving: dict[str, Any] | None = None
    artifacts: str | None = None
    model_cache: str | None = None  # where fetched model files are kept
    gpus: int = 0
    # seconds between the load reports an autoscaled function's worker writes (0: none)
    load_every: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_file(cls, path: str | Path) -> WorkerConfig:
        data: dict[str, Any] = json.loads(Path(path).read_text())
        return cls(**data)
