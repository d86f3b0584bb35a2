"""Where the platform keeps its state and where its API listens, read once and typed.

``SLUICE_HOME`` (default ``~/.sluice``) holds everything: the SQLite state, function sources, logs,
metrics, the API token and ``daemon.json`` (the running daemon's address, which the CLI reads).
``SLUICE_API_PORT`` (default 8070) and ``SLUICE_API_URL`` choose the API address.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

DEFAULT_API_PORT = 8070


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
        return cls(home=root.expanduser().resolve(),
                   api_port=DEFAULT_API_PORT if port is None else port)

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
        return f"http://{self.api_host}:{self.api_port}"
