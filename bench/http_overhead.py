"""HTTP trigger overhead: sluice's echo function against two baselines measured in the same run.

What it measures: requests/s and p99 latency of a JSON echo (parse the POSTed body, re-serialise
it, answer application/json) served by

- floor: a bare ASGI callable (no framework) on uvicorn with httptools and uvloop, using orjson
  when installed - the least any Python ASGI server on this machine can do per request;
- starlette: a minimal Starlette app doing the same on the same server, for scale;
- sluice: examples/echo.py (returns ``event.body``: sluice decodes the JSON and re-encodes it),
  deployed through the platform daemon (``sluice up`` + ``sluice deploy``, one worker, metrics
  on), or run stand-alone with ``--standalone`` (``python -m sluice.worker``).

Each server in turn is pinned to core 0 and loaded by wrk pinned to core 1 (one thread, 32
connections, a POST with a JSON body of 16 floats): answer check, ~1 s warm-up, measure, stop.

Why the baselines run in the same run: this machine is shared and noisy, so absolute numbers
drift from minute to minute; only ratios taken side by side mean much. The three servers are
interleaved over rounds (the order rotating each round) and medians are reported.

Targets (the issue): sluice >= 0.6x the floor's requests/s, and p99 <= 1.5x the floor's.

    python bench/http_overhead.py [--rounds 3] [--duration 5] [--standalone] [--record]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recording import record  # bench/ is on sys.path when run as a script

from sluice.platform.broker import free_port

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "bench" / "apps"
ECHO = ROOT / "examples" / "echo.py"
HOST = "127.0.0.1"
SERVER_CORE, LOAD_CORE = 0, 1
CONNECTIONS = 32
BODY = json.dumps([round(0.1 * i, 1) for i in range(1, 17)])  # 16 floats
JSON_CODEC = "orjson" if importlib.util.find_spec("orjson") else "json (stdlib)"
MIN_RPS_RATIO, MAX_P99_RATIO = 0.6, 1.5

Process = subprocess.Popen[bytes]
# A starter launches a server answering the echo on HOST:port, using scratch for any files;
# it returns the process to stop and the pid of the process that serves (to pin to the core).
Starter = Callable[[int, Path], tuple[Process, int]]


@dataclass(frozen=True)
class Contender:
    name: str
    start: Starter


@dataclass(frozen=True)
class Sample:
    rps: float
    p99_ms: float


# --- processes -----------------------------------------------------------------------------


def spawn(argv: list[str], env: dict[str, str] | None = None) -> Process:
    """Starts a server in its own session, so that Ctrl-C reaches only us and we stop it."""
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, start_new_session=True)


def stop(process: Process, pid: int) -> None:
    """SIGTERM (the servers drain), SIGKILL after 30 s; then make sure ``pid`` is gone too."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        pass
    finally:  # too slow, or a second Ctrl-C while waiting: do not leave it running
        if process.poll() is None:
            process.kill()
        process.wait()
    if pid != process.pid:  # a worker of the daemon: it leaves with its parent, or we end it
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pin(pid: int, core: int) -> None:
    """Pins every thread of ``pid`` to ``core`` (threads started later inherit it)."""
    subprocess.run(["taskset", "-apc", str(core), str(pid)], check=True, capture_output=True)


def wait_answers(url: str, timeout: float = 30.0, body: str = BODY,
                 wrong: Callable[[Any], str | None] | None = None) -> None:
    """Polls until the server answers the JSON POST of ``body``, then checks the answer (so a
    broken server fails early): ``wrong`` says what is wrong with it, if anything; by default
    it must be the echo of the body."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                answer = json.loads(response.read())
            break
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.05)
    problem = wrong(answer) if wrong is not None else (
        None if answer == json.loads(body) else f"not the echo of {body}")
    if problem is not None:
        raise RuntimeError(f"{url} answered {answer!r}: {problem}")


# --- the contenders -------------------------------------------------------------------------


def start_uvicorn(module: str, port: int, scratch: Path) -> tuple[Process, int]:
    process = spawn(["taskset", "-c", str(SERVER_CORE), sys.executable, "-m", "uvicorn",
                     "--app-dir", str(APPS), f"{module}:app", "--host", HOST, "--port", str(port),
                     "--http", "httptools", "--loop", "uvloop", "--log-level", "warning",
                     "--no-access-log"])
    return process, process.pid


def start_sluice(port: int, scratch: Path, *, standalone: bool = False) -> tuple[Process, int]:
    """Starts sluice serving examples/echo.py on ``port``: (process to stop, pid to pin).

    By default through the platform: a fresh daemon (its API on another free port, state in
    ``scratch``) that deploys the function with one worker; the daemon sits on the load core and
    the worker is what gets pinned to the server core. ``standalone`` runs the worker alone.
    """
    if standalone:
        process = spawn(["taskset", "-c", str(SERVER_CORE), sys.executable, "-m", "sluice.worker",
                         "--handler", f"{ECHO}:handler", "--host", HOST, "--port", str(port),
                         "--metrics-dir", str(scratch)])
        return process, process.pid
    api_port = free_port()
    env = {**os.environ, "SLUICE_HOME": str(scratch), "SLUICE_API_PORT": str(api_port)}
    cli = [sys.executable, "-m", "sluice.cli"]
    daemon = spawn(["taskset", "-c", str(LOAD_CORE), *cli, "up", "--no-broker"], env=env)
    try:
        wait_ready(f"http://{HOST}:{api_port}/api/health")
        deployed = subprocess.run(
            [*cli, "deploy", str(ECHO), "--name", "echo", "--trigger", f"http:port={port}",
             "--workers", "1", "-o", "json"], env=env, check=True, capture_output=True)
        (worker,) = json.loads(deployed.stdout)["status"]["pids"]
    except BaseException:
        stop(daemon, daemon.pid)
        raise
    return daemon, int(worker)


def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} was not ready within {timeout:.0f} s") from None
            time.sleep(0.05)


def contenders(standalone: bool) -> list[Contender]:
    """The floor first: every ratio is taken against it."""
    sluice = "sluice echo (" + ("worker stand-alone" if standalone else "platform, 1 worker") + ")"
    return [
        Contender(f"floor (bare ASGI + {JSON_CODEC.split()[0]})",
                  functools.partial(start_uvicorn, "bare_asgi")),
        Contender("starlette", functools.partial(start_uvicorn, "starlette_echo")),
        Contender(sluice, functools.partial(start_sluice, standalone=standalone)),
    ]


# --- load -----------------------------------------------------------------------------------


def write_script(path: Path, body: str = BODY) -> Path:
    """wrk's Lua script: a JSON POST of ``body`` (the echo's 16 floats by default)."""
    path.write_text('wrk.method = "POST"\n'
                    'wrk.headers["Content-Type"] = "application/json"\n'
                    f"wrk.body = '{body}'\n")
    return path


def run_wrk(url: str, seconds: int, script: Path) -> Sample:
    out = subprocess.run(
        ["taskset", "-c", str(LOAD_CORE), "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s",
         "--latency", "-s", str(script), url], check=True, capture_output=True, text=True).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> Sample:
    """Requests/sec and the 99% latency (us, ms or s) from wrk's --latency report."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if rps is None or p99 is None:
        raise RuntimeError(f"could not parse wrk's output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if bad:
        raise RuntimeError(f"{bad.group(1)} responses were not 2xx:\n{out}")
    errors = re.search(r"Socket errors:.*", out)
    if errors:
        print(f"  wrk: {errors.group(0)}", file=sys.stderr)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return Sample(float(rps.group(1)), float(p99.group(1)) * scale)


def measure(contender: Contender, seconds: int, script: Path) -> Sample:
    """One run: start, wait for the echo, pin, warm up ~1 s, measure, stop (always)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as scratch:
        process, pid = contender.start(port, Path(scratch))
        try:
            url = f"http://{HOST}:{port}/"
            wait_answers(url)
            pin(pid, SERVER_CORE)
            run_wrk(url, 1, script)
            return run_wrk(url, seconds, script)
        finally:
            stop(process, pid)


# --- report ---------------------------------------------------------------------------------


def table(medians: dict[str, Sample]) -> list[str]:
    floor = next(iter(medians.values()))
    lines = ["| server | req/s | p99 ms | req/s vs floor | p99 vs floor |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, m in medians.items():
        lines.append(f"| {name} | {m.rps:,.0f} | {m.p99_ms:.2f} | {m.rps / floor.rps:.2f}x | "
                     f"{m.p99_ms / floor.p99_ms:.2f}x |")
    return lines


def verdict(floor: Sample, sluice: Sample) -> tuple[bool, list[str]]:
    rps_ratio, p99_ratio = sluice.rps / floor.rps, sluice.p99_ms / floor.p99_ms
    rps_ok, p99_ok = rps_ratio >= MIN_RPS_RATIO, p99_ratio <= MAX_P99_RATIO
    return rps_ok and p99_ok, [
        f"- req/s: sluice {rps_ratio:.2f}x the floor (target >= {MIN_RPS_RATIO}x): "
        f"{'PASS' if rps_ok else 'FAIL'}",
        f"- p99: sluice {p99_ratio:.2f}x the floor (target <= {MAX_P99_RATIO}x): "
        f"{'PASS' if p99_ok else 'FAIL'}",
    ]


# --- main -----------------------------------------------------------------------------------


def check_tools() -> str | None:
    """Why the benchmark cannot run here, or None."""
    if not shutil.which("wrk"):
        return "wrk is not installed: apt-get install -y wrk"
    if not shutil.which("taskset"):
        return "taskset is not installed: apt-get install -y util-linux"
    if not {SERVER_CORE, LOAD_CORE} <= os.sched_getaffinity(0):
        return f"needs cores {SERVER_CORE} and {LOAD_CORE} (server and load pinned apart)"
    return None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=int, default=5,
                        help="seconds of measured load per server and round (default 5)")
    parser.add_argument("--standalone", action="store_true",
                        help="run the sluice worker alone instead of deploying via the platform")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    problem = check_tools()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    servers = contenders(args.standalone)
    samples: dict[str, list[Sample]] = {s.name: [] for s in servers}
    print(f"baselines' JSON codec: {JSON_CODEC}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        script = write_script(Path(tmp) / "post.lua")
        for round_number in range(args.rounds):
            shift = round_number % len(servers)  # rotate the order: no server always goes first
            for server in servers[shift:] + servers[:shift]:
                sample = measure(server, args.duration, script)
                samples[server.name].append(sample)
                print(f"round {round_number + 1}: {server.name:<36} {sample.rps:>9,.0f} req/s  "
                      f"p99 {sample.p99_ms:6.2f} ms", file=sys.stderr, flush=True)
    medians = {name: Sample(statistics.median(s.rps for s in runs),
                            statistics.median(s.p99_ms for s in runs))
               for name, runs in samples.items()}
    ok, targets = verdict(medians[servers[0].name], medians[servers[-1].name])
    lines = table(medians)
    print("\n".join([*lines, "", *targets]))
    if args.record:
        setup = (f"server on core {SERVER_CORE}, `wrk -t1 -c{CONNECTIONS}` on core {LOAD_CORE}, "
                 f"POST of a JSON body of 16 floats; baselines' JSON codec: {JSON_CODEC}; "
                 f"medians of {args.rounds} interleaved rounds of {args.duration} s.")
        record("HTTP trigger overhead", setup,
               shlex.join(["python", "bench/http_overhead.py", *sys.argv[1:]]), lines,
               "\n".join(targets))
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # the servers were stopped on the way out
        raise SystemExit(130) from None
