"""A small client for the platform API (stdlib only, so the CLI starts fast)."""

from __future__ import annotations

import builtins
import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

from .errors import ApiError, PlatformError, UnauthorizedError
from .settings import Settings

BUILD_TIMEOUT = 600.0  # seconds: spec.build.timeout's default


class Client:
    """Talks to a running platform; ``Client()`` finds it through SLUICE_HOME / SLUICE_API_*."""

    def __init__(
        self,
        api_url: str | None = None,
        token: str | None = None,
        settings: Settings | None = None,
        timeout: float = 300.0,
    ) -> None:
        settings = settings or Settings.from_env()
        self.api_url = (api_url or settings.api_url()).rstrip("/")
        self.token = token if token is not None else settings.token()
        self.timeout = timeout
        parts = urlsplit(self.api_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80

    def nuclio_dashboard_url(self) -> str:
        """The Nuclio dashboard URL nuclio-jupyter deploys to (``%nuclio deploy -d URL``,
        ``nuclio.deploy_file(..., dashboard_url=URL)``), with the token as its password."""
        parts = urlsplit(self.api_url)
        auth = f"sluice:{quote(self.token, safe='')}@" if self.token else ""
        return f"{parts.scheme}://{auth}{parts.netloc}/nuclio"

    # -- transport -----------------------------------------------------------------------------
    def _open(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None,
        timeout: float | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout or self.timeout)
        all_headers = dict(headers or {})
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn.request(method, path, body=body, headers=all_headers)
            return conn, conn.getresponse()
        except OSError as exc:
            conn.close()
            raise PlatformError(
                f"cannot reach the sluice platform at {self.api_url} ({exc.strerror or exc}); "
                "start it with `sluice up` (or `make run`), or point SLUICE_API_URL at it"
            ) from None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One exchange: (status, lower-cased headers, body). With ``check``, an error status
        raises ApiError with the platform's message."""
        conn, response = self._open(method, path, body, headers, timeout)
        try:
            raw = response.read()
            result = (response.status, {k.lower(): v for k, v in response.getheaders()}, raw)
        finally:
            conn.close()
        if check and result[0] >= 400:
            raise _error(result[0], raw)
        return result

    def _json(self, method: str, path: str, payload: Any = None, timeout: float | None = None
              ) -> Any:
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        return json.loads(self.request(method, path, body, headers, timeout=timeout)[2]
                          or b"null")

    # -- the platform's verbs --------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return dict(self._json("GET", "/api/info"))

    def list(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/api/functions"))

    def get(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/functions/{quote(name)}"))

    def deploy(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Deploy and wait until the function is ready (or failed); build commands may take
        their whole ``build.timeout`` before the workers even start."""
        build = spec.get("build") if isinstance(spec.get("build"), dict) else None
        wait = self.timeout
        if build and build.get("commands"):
            wait = max(wait, float(build.get("timeout") or BUILD_TIMEOUT) + self.timeout)
        return dict(self._json("POST", "/api/functions", {"spec": spec}, timeout=wait))

    def delete(self, name: str) -> None:
        self._json("DELETE", f"/api/functions/{quote(name)}")

    def scale(self, name: str, replicas: int | None = None, workers: int | None = None,
              max_replicas: int | None = None) -> dict[str, Any]:
        payload = {k: v for k, v in (("replicas", replicas), ("workers", workers),
                                     ("max_replicas", max_replicas)) if v is not None}
        return dict(self._json("POST", f"/api/functions/{quote(name)}/scale", payload))

    def invoke(
        self,
        name: str,
        body: bytes = b"",
        method: str = "POST",
        path: str = "/",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Call a function through the platform; returns (status, headers, body)."""
        status, out_headers, out = self.request(
            method, f"/api/functions/{quote(name)}/invoke{path}", body, headers, check=False)
        if status >= 400 and out_headers.get("x-sluice-platform-error"):
            raise _error(status, out)  # the platform answered, not the function
        return status, out_headers, out

    def logs(self, name: str, tail: int = 100, follow: bool = False) -> Iterator[bytes]:
        return self._lines(f"/api/functions/{quote(name)}/logs?tail={tail}&follow={int(follow)}")

    # -- job runs and schedules ------------------------------------------------------------------
    def run(self, name: str, params: dict[str, Any] | None = None, trigger: str = "api"
            ) -> dict[str, Any]:
        """Start a run of a job function; returns the run record (pending)."""
        return dict(self._json("POST", f"/api/functions/{quote(name)}/runs",
                               {"params": params or {}, "trigger": trigger}))

    def runs(self, name: str | None = None, status: str | None = None, limit: int = 50
             ) -> builtins.list[dict[str, Any]]:
        query = f"?limit={limit}" + (f"&status={quote(status)}" if status else "")
        if name:
            return list(self._json("GET", f"/api/functions/{quote(name)}/runs{query}"))
        return list(self._json("GET", f"/api/runs{query}"))

    def get_run(self, run_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/runs/{quote(run_id)}"))

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/api/runs/{quote(run_id)}/cancel", {}))

    def run_logs(self, run_id: str, tail: int = 0, follow: bool = False) -> Iterator[bytes]:
        """A run's log lines; with ``follow`` the stream ends when the run does."""
        return self._lines(f"/api/runs/{quote(run_id)}/logs?tail={tail}&follow={int(follow)}")

    def wait_run(self, run_id: str) -> dict[str, Any]:
        """Block until the run has finished; returns its record."""
        for _ in self.run_logs(run_id, tail=1, follow=True):
            pass
        return self.get_run(run_id)

    def schedules(self) -> builtins.list[dict[str, Any]]:
        return list(self._json("GET", "/api/schedules"))

    def pause(self, name: str, trigger: str | None = None) -> dict[str, Any]:
        return dict(self._json("POST", f"/api/functions/{quote(name)}/schedules/pause",
                               {"trigger": trigger} if trigger else {}))

    def resume(self, name: str, trigger: str | None = None) -> dict[str, Any]:
        return dict(self._json("POST", f"/api/functions/{quote(name)}/schedules/resume",
                               {"trigger": trigger} if trigger else {}))

    def _lines(self, path: str) -> Iterator[bytes]:
        conn, response = self._open("GET", path, None, None)
        try:
            if response.status >= 400:
                raise _error(response.status, response.read())
            if "follow=1" in path and conn.sock is not None:
                conn.sock.settimeout(None)  # a quiet run may print nothing for an hour
            while line := response.readline():
                yield line
        finally:
            conn.close()


def _error(status: int, raw: bytes) -> ApiError:
    try:
        message = str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        message = raw.decode("utf-8", "replace") or f"HTTP {status}"
    if status == 401:
        return UnauthorizedError(401, message)
    return ApiError(status, message)
