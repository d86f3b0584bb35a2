"""What one Kafka trigger of one worker needs (plain data: the worker does not import pydantic)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class KafkaSettings:
    function: str
    trigger: str
    topics: list[str]
    group: str
    bootstrap_servers: list[str]
    initial_offset: str = "earliest"
    session_timeout_ms: int = 6_000
    heartbeat_interval_ms: int = 1_000
    max_poll_interval_ms: int = 60_000
    max_batch_size: int = 100
    max_wait_ms: int = 100
    batch: bool = False
    content_type: str | None = None
    output: str | None = None
    dead_letter: str = ""
    retries: int = 3
    retry_backoff_ms: int = 100
    explicit_ack: bool = False
    security: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_trigger(
        cls, function: str, trigger: str, spec: dict[str, Any], bootstrap: str | None
    ) -> KafkaSettings:
        """From a KafkaTrigger's JSON; unset group, servers and dead-letter topic get defaults."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in spec.items() if k in known and v is not None}
        servers = values.pop("bootstrap_servers", None) or (bootstrap or "").split(",")
        servers = [s.strip() for s in servers if s and s.strip()]
        if not servers:
            raise ValueError(f"kafka trigger {trigger!r}: no bootstrap servers (set "
                             "bootstrap_servers, or run the platform with its broker)")
        values.setdefault("group", function)
        values.setdefault("dead_letter", f"{function}.dead-letter")
        return cls(function=function, trigger=trigger, bootstrap_servers=servers, **values)

    def consumer_config(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "group_id": self.group,
            "client_id": f"sluice-{self.function}",
            "enable_auto_commit": False,
            "auto_offset_reset": self.initial_offset,
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "max_poll_interval_ms": self.max_poll_interval_ms,
            "max_poll_records": self.max_batch_size,
            "fetch_max_wait_ms": self.max_wait_ms,
            "reconnect_backoff_max_ms": 5_000,
            **self.security,
        }

    def producer_config(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": f"sluice-{self.function}-out",
            "acks": "all",
            # at-least-once already allows a repeat; an idempotent producer's id does not survive
            # a broker that lost its state (the in-memory embedded one), so it is off
            "enable_idempotence": False,
            "linger_ms": 2,
            "retries": 2_147_483_647,
            "delivery_timeout_ms": 120_000,
            "reconnect_backoff_max_ms": 5_000,
            **self.security,
        }
