"""Where the platform keeps its state and where its API listens, read once and typed.

``SLUICE_HOME`` (default ``~/.sluice``) holds everything: the SQLite state, function sources, logs,
metrics, the environments of functions with build commands (``envs/``), the API token and
``daemon.json`` (the running daemon's address, which the CLI reads).
``SLUICE_API_PORT`` (default 8070) and ``SLUICE_API_URL`` choose the API address;
``SLUICE_API_HOST`` (default 127.0.0.1) is where the daemon listens (``0.0.0.0`` in a pod behind
a Service: then reads need the token too).

A real Kafka cluster is configured in ``$SLUICE_HOME/config.yaml``::

    kafka:
      bootstrap_servers: broker1:9092,broker2:9092
      security: {security_protocol: SASL_SSL, sasl_mechanism: PLAIN,
                 sasl_plain_username: me, sasl_plain_password: secret}

or with ``SLUICE_KAFKA_BOOTSTRAP`` (which wins); then no embedded broker starts.

The model registry's artifact store is ``$SLUICE_HOME/artifacts`` unless ``config.yaml`` says
``artifacts: s3://bucket/prefix`` (or another directory), or ``SLUICE_ARTIFACTS`` does (which
wins). S3 credentials and endpoint come from boto3's own settings (``AWS_PROFILE``,
``AWS_ENDPOINT_URL``, ...).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_API_PORT = 8070

# kafka-python settings a cluster's security may set (passed through as they are)
KAFKA_SECURITY_KEYS = (
    "security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
    "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_check_hostname",
)


@dataclass(frozen=True)
class KafkaCluster:
    """A user's own Kafka cluster (None bootstrap: use the embedded broker)."""

    bootstrap: str | None = None
    security: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    home: Path
    api_host: str = "127.0.0.1"
    api_port: int = DEFAULT_API_PORT

    @classmethod
    def from_env(cls, home: str | Path | None = None, api_port: int | None = None) -> Settings:
        root = Path(home or os.environ.get("SLUICE_HOME") or Path.home() / ".sluice")
        port = api_port
        if port is None:
            raw = os.environ.get("SLUICE_API_PORT")
            if raw:
                if not raw.isdigit() or not 0 <= int(raw) <= 65535:
                    raise ValueError(f"SLUICE_API_PORT must be a port number, got {raw!r}")
                port = int(raw)
        host = os.environ.get("SLUICE_API_HOST", "").strip() or "127.0.0.1"
        return cls(home=root.expanduser().resolve(), api_host=host,
                   api_port=DEFAULT_API_PORT if port is None else port)

    @property
    def loopback_only(self) -> bool:
        """Whether the API listens on this machine's loopback only (reads are open then)."""
        return self.api_host in ("127.0.0.1", "localhost", "::1")

    @property
    def connect_host(self) -> str:
        """The address a client on this machine reaches the API by."""
        return "127.0.0.1" if self.api_host in ("0.0.0.0", "::", "") else self.api_host

    # -- layout of the state directory -----------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.home / "state.db"

    @property
    def functions_dir(self) -> Path:
        return self.home / "functions"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def metrics_dir(self) -> Path:
        return self.home / "metrics"

    @property
    def envs_dir(self) -> Path:
        """Build environments: one venv per distinct ``build.commands`` list, made on first use."""
        return self.home / "envs"

    @property
    def token_path(self) -> Path:
        return self.home / "token"

    @property
    def daemon_path(self) -> Path:
        return self.home / "daemon.json"

    def ensure_dirs(self) -> None:
        for path in (self.home, self.functions_dir, self.logs_dir, self.metrics_dir):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o700)

    def token(self, create: bool = False) -> str | None:
        """The API token; the daemon creates it (mode 0600) on first start."""
        path = self.token_path
        if path.exists():
            return path.read_text().strip()
        if not create:
            return None
        self.ensure_dirs()
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        return token

    @property
    def config_path(self) -> Path:
        return self.home / "config.yaml"

    def _config(self) -> dict[str, Any]:
        if not self.config_path.exists():
            return {}
        import yaml

        try:
            config = yaml.safe_load(self.config_path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{self.config_path}: not valid YAML: {exc}") from None
        if not isinstance(config, dict):
            raise ValueError(f"{self.config_path}: must hold a mapping (kafka:, artifacts:)")
        return config

    def artifacts_uri(self) -> str:
        """The registry's store: SLUICE_ARTIFACTS, else config.yaml's ``artifacts``, else
        ``$SLUICE_HOME/artifacts``."""
        env = os.environ.get("SLUICE_ARTIFACTS", "").strip()
        if env:
            return env
        configured = self._config().get("artifacts")
        if configured is not None and not isinstance(configured, str):
            raise ValueError(f"{self.config_path}: 'artifacts' must be a directory or "
                             "s3://bucket/prefix")
        return configured or str(self.home / "artifacts")

    def kafka_cluster(self) -> KafkaCluster:
        """The configured cluster: config.yaml's ``kafka`` section, SLUICE_KAFKA_BOOTSTRAP wins."""
        bootstrap: str | None = None
        security: dict[str, Any] = {}
        if self.config_path.exists():
            config = self._config()
            kafka = config.get("kafka") or {}
            if not isinstance(kafka, dict):
                raise ValueError(f"{self.config_path}: 'kafka' must be a mapping")
            unknown = set(kafka) - {"bootstrap_servers", "security"}
            if unknown:
                raise ValueError(f"{self.config_path}: kafka.{sorted(unknown)[0]}: unknown field "
                                 "(allowed: bootstrap_servers, security)")
            servers = kafka.get("bootstrap_servers")
            if isinstance(servers, list):
                servers = ",".join(str(s) for s in servers)
            bootstrap = str(servers) if servers else None
            security = dict(kafka.get("security") or {})
            for key in security:
                if key not in KAFKA_SECURITY_KEYS:
                    raise ValueError(f"{self.config_path}: kafka.security.{key}: unknown "
                                     f"setting (allowed: {', '.join(KAFKA_SECURITY_KEYS)})")
        env = os.environ.get("SLUICE_KAFKA_BOOTSTRAP", "").strip()
        return KafkaCluster(bootstrap=env or bootstrap, security=security)

    def api_url(self) -> str:
        """The API address: ``SLUICE_API_URL``, else the running daemon's, else the configured."""
        explicit = os.environ.get("SLUICE_API_URL")
        if explicit:
            return explicit.rstrip("/")
        if "SLUICE_API_PORT" not in os.environ and self.daemon_path.exists():
            try:
                return str(json.loads(self.daemon_path.read_text())["api_url"]).rstrip("/")
            except (ValueError, KeyError, OSError):
                pass
        return f"http://{self.connect_host}:{self.api_port}"
