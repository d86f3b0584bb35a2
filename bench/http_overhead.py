"""HTTP trigger overhead: sluice's echo function against two baselines in the same run.

One server at a time is pinned to core 0 and loaded by wrk pinned to core 1 (32 connections,
a POST with a JSON body of 16 floats). The servers are interleaved over rounds and medians are
reported, because this machine is shared and noisy: only ratios measured side by side mean much.

- floor: a bare ASGI callable on uvicorn (httptools, uvloop) that parses and re-serialises the
  JSON with orjson;
- starlette: a minimal Starlette app doing the same;
- sluice: examples/echo.py deployed through the real platform (`sluice up` + `sluice deploy`),
  one worker process, metrics on.

Targets (issue 2): sluice >= 0.6x the floor's requests/s, and p99 <= 1.5x the floor's.

    python bench/http_overhead.py [--rounds 3] [--duration 5] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "bench" / "apps"
BODY = json.dumps([round(0.1 * i, 1) for i in range(1, 17)])
SERVER_CORE, LOAD_CORE = "0", "1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ok(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, data=BODY.encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Server:
    """Starts one contender pinned to the server core; ``url`` answers the echo."""

    def __init__(self, name: str, start: Callable[[], tuple[list[subprocess.Popen[bytes]], str]]):
        self.name = name
        self._start = start
        self.processes: list[subprocess.Popen[bytes]] = []
        self.url = ""

    def __enter__(self) -> Server:
        self.processes, self.url = self._start()
        wait_ok(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.processes):
            stop(process)


def uvicorn_server(module: str) -> Callable[[], tuple[list[subprocess.Popen[bytes]], str]]:
    def start() -> tuple[list[subprocess.Popen[bytes]], str]:
        port = free_port()
        process = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "uvicorn", "--app-dir",
             str(APPS), f"{module}:app", "--port", str(port), "--http", "httptools", "--loop",
             "uvloop", "--log-level", "warning", "--no-access-log"])
        return [process], f"http://127.0.0.1:{port}/"
    return start


def sluice_server(home: Path) -> Callable[[], tuple[list[subprocess.Popen[bytes]], str]]:
    def start() -> tuple[list[subprocess.Popen[bytes]], str]:
        port = free_port()
        env = {**os.environ, "SLUICE_HOME": str(home), "SLUICE_API_PORT": str(port)}
        shutil.rmtree(home, ignore_errors=True)
        cli = [sys.executable, "-m", "sluice.cli"]
        daemon = subprocess.Popen(["taskset", "-c", LOAD_CORE, *cli, "up", "--no-broker"],
                                  env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        out = subprocess.run(cli + ["deploy", str(ROOT / "examples/echo.py"), "--name", "echo",
                                    "-o", "json"], env=env, check=True, capture_output=True)
        status = json.loads(out.stdout)["status"]
        for pid in status["pids"]:  # the worker, not the daemon, serves the load
            subprocess.run(["taskset", "-apc", SERVER_CORE, str(pid)], check=True,
                           capture_output=True)
        return [daemon], status["endpoint"] + "/"
    return start


def run_wrk(url: str, duration: int, script: Path) -> tuple[float, float]:
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c32", f"-d{duration}s", "--latency",
         "-s", str(script), url], check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99_ms = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return rps, p99_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per run")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("needs 2 cores (server and load pinned apart)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                          f"wrk.body = '{BODY}'\n")
        servers = [Server("floor (bare ASGI, uvicorn+httptools+uvloop)",
                          uvicorn_server("bare_asgi")),
                   Server("starlette", uvicorn_server("starlette_echo")),
                   Server("sluice echo (platform, 1 worker)", sluice_server(Path(tmp) / "home"))]
        results: dict[str, list[tuple[float, float]]] = {s.name: [] for s in servers}
        for round_number in range(1, args.rounds + 1):
            for server in servers:
                with server:
                    run_wrk(server.url, 1, script)  # warm-up
                    results[server.name].append(run_wrk(server.url, args.duration, script))
                rps, p99 = results[server.name][-1]
                print(f"round {round_number}: {server.name:<45} {rps:>9.0f} req/s  "
                      f"p99 {p99:.2f} ms", file=sys.stderr, flush=True)
    medians = {name: (statistics.median(r for r, _ in runs), statistics.median(p for _, p in runs))
               for name, runs in results.items()}
    floor_rps, floor_p99 = medians[servers[0].name]
    lines = ["| server | req/s | p99 ms | req/s vs floor | p99 vs floor |",
             "| --- | --- | --- | --- | --- |"]
    for name, (rps, p99) in medians.items():
        lines.append(f"| {name} | {rps:,.0f} | {p99:.2f} | {rps / floor_rps:.2f}x | "
                     f"{p99 / floor_p99:.2f}x |")
    sluice_rps, sluice_p99 = medians[servers[2].name]
    throughput_ok = sluice_rps >= 0.6 * floor_rps
    latency_ok = sluice_p99 <= 1.5 * floor_p99
    summary = (f"sluice: {sluice_rps / floor_rps:.2f}x the floor's req/s (target >= 0.6x: "
               f"{'PASS' if throughput_ok else 'FAIL'}), p99 {sluice_p99 / floor_p99:.2f}x the "
               f"floor's (target <= 1.5x: {'PASS' if latency_ok else 'FAIL'}); medians of "
               f"{args.rounds} interleaved rounds of {args.duration} s.")
    print("\n".join(lines))
    print(summary)
    if args.record:
        cpu = next((line.split(":", 1)[1].strip() for line in
                    Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor())
        results_path = ROOT / "bench" / "RESULTS.md"
        if not results_path.exists():
            results_path.write_text("# Benchmark results\n\nEach section is one recorded run.\n")
        with results_path.open("a") as out:
            out.write(f"\n## HTTP trigger overhead ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)\n\n"
                      f"Machine: {os.cpu_count()} cores, {cpu}; server on core {SERVER_CORE}, "
                      f"wrk -t1 -c32 on core {LOAD_CORE}, JSON body of 16 floats. Command: "
                      f"`python bench/http_overhead.py --rounds {args.rounds} --duration "
                      f"{args.duration} --record`.\n\n" + "\n".join(lines) + f"\n\n{summary}\n")
    return 0 if throughput_ok and latency_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
