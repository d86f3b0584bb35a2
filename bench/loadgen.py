"""Open-loop HTTP load for the benchmarks: builds and runs bench/openloop.c.

Closed-loop tools (wrk, hey) wait for a free connection before sending, so an overloaded server
slows its own load and its queueing never shows in the tail. ``openloop`` sends on a seeded
Poisson schedule and times each request from when it was *meant* to go out (see the comment at
the top of bench/openloop.c). ``run`` drives one measurement; ``sustainable_rate`` searches for
the highest rate a server holds within a latency bound.

    from loadgen import run  # bench/ is on sys.path when a bench script runs
    result = run("127.0.0.1", 8080, "/v2/models/m/infer", body, {"Content-Type": "..."},
                 rate=20_000, duration=5, cpu=1)
    result["latency_ms"]["p99"], result["achieved_rate"], result["generator_behind"]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bench" / "openloop.c"
BINARY = ROOT / "build" / "bench" / "openloop"
NO_COMPILER = "bench/loadgen.py needs a C compiler (cc) to build the open-loop load generator"


class Latency(TypedDict):
    """Milliseconds from intended send time to the answer's last byte, over all answers."""

    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    mean: float


class ErrorKinds(TypedDict):
    connect: int
    reset: int
    malformed: int


class LoadResult(TypedDict):
    """What ``openloop`` prints; counts cover only requests meant to go out after the warm-up."""

    offered_rate: float
    pattern: str
    duration_s: float
    warmup_s: float
    connections: int
    connections_opened: int
    scheduled: int  # arrivals drawn in the measured window: sent + unsent
    sent: int
    unsent: int  # still waiting for a free connection when the run ended
    warmup_sent: int
    completed: int  # responses read to the end, any status
    ok: int  # 2xx
    status: dict[str, int]  # non-2xx answers by code
    errors: int  # connect, reset and malformed together
    error_kinds: ErrorKinds
    timeouts: int
    achieved_rate: float  # 2xx answers whose last byte came in the measured window, per second
    latency_ms: Latency
    max_send_lag_ms: float
    send_lag_p99_ms: float
    generator_behind: bool  # send lag p99 > 1 ms: the generator, not the server, was slow


def build() -> Path:
    """Compiles openloop into build/bench/ unless the binary is newer than its source."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    cc = shutil.which("cc")
    if cc is None:
        raise RuntimeError(NO_COMPILER)
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    partial = BINARY.with_name(f".openloop-{os.getpid()}")  # renamed: concurrent builds are safe
    compiled = subprocess.run([cc, "-O2", "-o", str(partial), str(SOURCE), "-lm"],
                              capture_output=True, text=True)
    if compiled.returncode != 0:
        raise RuntimeError(f"building {SOURCE} failed:\n{compiled.stderr}")
    partial.replace(BINARY)
    return BINARY


def run(host: str, port: int, path: str, body: bytes, headers: dict[str, str], rate: float,
        duration: float, pattern: Literal["poisson", "onoff"] = "poisson", on: float = 1.0,
        off: float = 1.0, connections: int = 512, timeout: float = 2.0, warmup: float = 1.0,
        seed: int = 1, method: str = "POST", cpu: int | None = None) -> LoadResult:
    """Offers ``rate`` requests/s for ``duration`` s after ``warmup`` s; pinned to ``cpu``."""
    binary = build()
    with tempfile.NamedTemporaryFile(prefix="openloop-body-") as body_file:
        body_file.write(body)
        body_file.flush()
        argv = [str(binary), "--host", host, "--port", str(port), "--path", path,
                "--method", method, "--body-file", body_file.name, "--rate", str(rate),
                "--duration", str(duration), "--warmup", str(warmup), "--pattern", pattern,
                "--on", str(on), "--off", str(off), "--connections", str(connections),
                "--timeout", str(timeout), "--seed", str(seed)]
        for name, value in headers.items():
            argv += ["--header", f"{name}: {value}"]
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        done = subprocess.run(argv, capture_output=True, text=True,
                              timeout=warmup + duration + timeout + 30)
    if done.returncode != 0:
        raise RuntimeError(f"openloop exited with {done.returncode}: {done.stderr.strip()}")
    result: LoadResult = json.loads(done.stdout)
    return result


def failure_share(result: LoadResult) -> float:
    """Non-2xx answers, errors, timeouts and never-sent requests over all scheduled."""
    failed = (sum(result["status"].values()) + result["errors"] + result["timeouts"]
              + result["unsent"])
    return failed / max(result["scheduled"], 1)


def passes(result: LoadResult, p99_ms: float, max_failure_share: float) -> bool:
    """Within the bound, few enough failures, and the generator kept to its schedule."""
    return (result["latency_ms"]["p99"] <= p99_ms and failure_share(result) < max_failure_share
            and not result["generator_behind"])


@dataclass(frozen=True)
class SustainableRate:
    """The best passing rate (None: even the lowest probed failed) and every probe, in order."""

    rate: float | None
    probes: list[tuple[float, LoadResult]]


def sustainable_rate(probe: Callable[[float], LoadResult], start: float = 1000.0,
                     factor: float = 1.5, ramp_probes: int = 12, bisect_probes: int = 4,
                     p99_ms: float = 50.0, max_failure_share: float = 0.001,
                     behind_retries: int = 2, confirm_failures: bool = True
                     ) -> SustainableRate:
    """Ramps ``start`` by ``factor`` until a probe fails, then bisects between pass and fail.

    A probe whose generator fell behind (on a shared machine: another process took its core)
    says nothing about the server, so it is run again, up to ``behind_retries`` times. With
    ``confirm_failures``, a rate fails only when a second probe fails too: one stall of the
    shared machine during one probe would otherwise cap the answer (seen: an HTTP limit of
    6,600 req/s in one run, 10,000-11,000 in three others).
    """
    probes: list[tuple[float, LoadResult]] = []

    def once(rate: float) -> LoadResult:
        for _ in range(1 + behind_retries):
            result = probe(rate)
            probes.append((rate, result))
            if not result["generator_behind"]:
                break
        return result

    def ok(rate: float) -> bool:
        if passes(once(rate), p99_ms, max_failure_share):
            return True
        return confirm_failures and passes(once(rate), p99_ms, max_failure_share)

    best: float | None = None
    failed: float | None = None
    rate = start
    for _ in range(ramp_probes):
        if not ok(rate):
            failed = rate
            break
        best, rate = rate, rate * factor
    if failed is None:  # never failed: the ramp's last rate is the answer we can give
        return SustainableRate(best, probes)
    low = best if best is not None else 0.0
    for _ in range(bisect_probes):
        middle = (low + failed) / 2
        if ok(middle):
            best = low = middle
        else:
            failed = middle
    return SustainableRate(best, probes)
