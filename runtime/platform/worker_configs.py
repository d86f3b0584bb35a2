"""From a function spec to what each of its worker processes is told (WorkerConfig), including
the Kafka settings of each trigger resolved against the platform's cluster."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sluice.errors import SpecError
from sluice.spec import FunctionSpec
from sluice.worker.config import WorkerConfig

from .autoscale import LOAD_EVERY, ScaleSettings


@dataclass(frozen=True)
class WorkerDefaults:
    """What the platform adds to every worker's config."""

    api_url: str | None
    trigger_token: str  # proves a request to a worker is the platform's (cron) delivery
    kafka_bootstrap: str | None = None
    kafka_security: dict[str, Any] = field(default_factory=dict)
    artifacts: str | None = None  # the model registry's store (serving functions)
    home: str | None = None  # the platform's state directory (SLUICE_HOME)

    def env(self) -> dict[str, str]:
        """What every worker and job process is told about the platform (``SLUICE_HOME``,
        ``SLUICE_ARTIFACTS``): where a handler finds the data the platform keeps."""
        out = {"SLUICE_HOME": self.home} if self.home else {}
        return out | ({"SLUICE_ARTIFACTS": self.artifacts} if self.artifacts else {})


def kafka_settings(spec: FunctionSpec, defaults: WorkerDefaults) -> list[dict[str, Any]]:
    """Each Kafka trigger's settings; a bad one raises SpecError (refused at deploy)."""
    from sluice.triggers.kafka.settings import KafkaSettings

    out = []
    for name, trigger in spec.kafka_triggers.items():
        data = trigger.model_dump(mode="json")
        if not data.get("bootstrap_servers") and not data.get("security"):
            data["security"] = defaults.kafka_security  # the platform's cluster, its security
        try:
            settings = KafkaSettings.from_trigger(spec.name, name, data, defaults.kafka_bootstrap)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        out.append(asdict(settings))
    return out


def worker_configs(spec: FunctionSpec, generation: int, source_dir: Path | None,
                   port: int | None, metrics_dir: Path, defaults: WorkerDefaults,
                   function_dir: Path | None = None, replicas: int | None = None
                   ) -> list[WorkerConfig]:
    """One config per worker process: replicas (default: the spec's minimum) x workers of
    them, worker ids from 0."""
    trigger = spec.http_trigger
    metrics_dir.mkdir(parents=True, exist_ok=True)
    count = (replicas or max(1, spec.replicas.min)) * spec.workers
    kafka = kafka_settings(spec, defaults)
    load_every = LOAD_EVERY if ScaleSettings.of(spec) is not None else 0.0
    configs = []
    for worker_id in range(count):
        configs.append(WorkerConfig(
            function=spec.name,
            handler=spec.handler,
            source_dir=str(source_dir) if source_dir else None,
            worker_id=worker_id,
            generation=generation,
            timeout=spec.timeout,
            env={**defaults.env(), **spec.env},  # the spec's own env wins
            http_trigger=next(n for n, t in spec.triggers.items() if t is trigger)
            if trigger else None,
            host=trigger.host if trigger else "127.0.0.1",
            port=port,
            max_request_body_size=trigger.max_request_body_size if trigger else 0,
            max_inflight=trigger.max_inflight if trigger else 1,
            max_connections=trigger.max_connections if trigger else 1,
            batch_size=trigger.batching.batch_size
            if trigger and trigger.batching and trigger.batching.enabled else 0,
            batch_timeout=trigger.batching.timeout_ms / 1000
            if trigger and trigger.batching else 0.01,
            platform_url=defaults.api_url,
            metrics_dir=str(metrics_dir),
            kafka=kafka,
            # in-flight handlers may take their whole timeout: drain that long (at most 5 min)
            drain_timeout=min(max(spec.timeout + 1.0, 5.0), 300.0),
            trigger_token=defaults.trigger_token,
            serving=spec.serving.model_dump(mode="json") if spec.serving else None,
            artifacts=defaults.artifacts,
            model_cache=str(function_dir / "models") if function_dir else None,
            gpus=spec.resources.gpu,
            load_every=load_every,
        ))
    return configs
