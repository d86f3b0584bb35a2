"""Model-serving batching: sluice's batcher against Ray Serve, Triton and the limits, open loop.

A torch MLP 64->512->512->8 (fp32), one sample per request, POSTed as V2 JSON to
``/v2/models/mlp/infer``, served by: sluice (the model pushed and deployed with ``--batching
max_batch=64,latency_ms=20`` through ``sluice up``); Ray Serve (``@serve.batch``, 64 and 10 ms);
Triton's dynamic batcher via nvidia-pytriton (64 and 2 ms, in Triton's own environment); an
unbatched bare ASGI app on uvicorn; and the HTTP limit, that app without the model answering a
precomputed response of the same size (bench/apps/serving_*.py). Plus the compute limit: the
forward at batch 64 in this process.

One system at a time runs pinned to core 0 (with all it starts; torch on one thread), the
open-loop generator (bench/loadgen.py: Poisson arrivals, latency from the intended send time)
pinned to core 1. Per system: start, check its scores against the model's (1e-4), search the
highest offered rate held with p99 <= 50 ms and < 0.1% failures, measure p50/p99 at 10%, 50%
and 90% of it, and at 50% in on/off bursts (0.2 s at twice the mean rate, 0.2 s silent); stop.

Targets (the issue): sluice's sustainable rate >= 3x the better of Ray Serve and Triton and
>= 0.5x the HTTP limit; at 10% load its p50 <= 1.1x the unbatched server's (no idle wait).

    python bench/serving_batching.py [--systems sluice,unbatched,http-limit,ray,triton]
                                     [--duration 3] [--quick] [--record]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import loadgen
import torch
from apps.serving_model import PATH, answer_of, build_mlp, request_body, sample, save_mlp, scores
from recording import record  # noqa: E402 - bench/ is on sys.path when run as a script

from sluice.platform.broker import free_port

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "bench" / "apps"
TRITON_PYTHON = ROOT / ".venv-triton" / "bin" / "python"
HOST, SERVER_CORE, LOAD_CORE = "127.0.0.1", 0, 1
P99_MS, MAX_FAILURES = 50.0, 0.001
POINTS: list[tuple[str, float, Literal["poisson", "onoff"]]] = [
    ("10%", 0.1, "poisson"), ("50%", 0.5, "poisson"), ("90%", 0.9, "poisson"),
    ("on/off", 0.5, "onoff")]
ON_S, OFF_S = 0.2, 0.2
BODY, HEADERS = request_body(sample()), {"Content-Type": "application/json"}
MIN_VS_BASELINES, MIN_VS_HTTP, MAX_IDLE_P50 = 3.0, 0.5, 1.1

Process = subprocess.Popen[bytes]


@dataclass(frozen=True)
class Server:
    """A started system: a session leader, its port and log, and the pids outside its session
    (sluice's workers have sessions of their own)."""

    process: Process
    port: int
    log: Path
    others: tuple[int, ...] = ()


@dataclass(frozen=True)
class System:
    name: str
    label: str
    start_rate: float
    launch: Callable[[Path, Path], Server]  # (saved model, scratch dir) -> a started server


@dataclass(frozen=True)
class Settings:
    probe_s: float  # each search probe
    warmup_s: float
    point_s: float  # each load point
    factor: float  # the ramp's step
    bisect: int


@dataclass
class Outcome:
    label: str
    rate: float | None = None
    points: dict[str, loadgen.LoadResult] = field(default_factory=dict)  # by POINTS' keys
    problem: str = ""
    behind_probes: int = 0


# --- processes -----------------------------------------------------------------------------


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Process:
    """A server pinned to the server core, in its own session (Ctrl-C reaches only us)."""
    with log.open("ab") as out:
        return subprocess.Popen(["taskset", "-c", str(SERVER_CORE), *argv], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def leftovers(server: Server) -> list[int]:
    """What still runs of the server's session (Ray's actors leave its group, not the session)
    and of its other pids."""
    left = [pid for pid in server.others if Path(f"/proc/{pid}").exists()]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # gone meanwhile
            state, _, _, session = stat.read_text().rsplit(")", 1)[1].split()[:4]
            if int(session) == server.process.pid and state != "Z":
                left.append(int(stat.parent.name))
    return left


def stop(server: Server, grace: float = 30.0) -> None:
    """SIGTERM the leader, which shuts down what it started; after ``grace``, SIGTERM what is
    left of its session (and its other pids), and SIGKILL what is left 10 s after that."""
    if server.process.poll() is None:
        server.process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(grace)
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in leftovers(server):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        deadline = time.monotonic() + 10
        while leftovers(server) and time.monotonic() < deadline:
            time.sleep(0.1)
    server.process.wait()


def post(port: int, timeout: float = 5.0) -> bytes:
    request = urllib.request.Request(f"http://{HOST}:{port}{PATH}", data=BODY, headers=HEADERS)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read()
    return body


def wait_answers(server: Server, expected: list[float], timeout: float = 180.0) -> None:
    """Polls until the server answers the benchmark's request, then checks the scores."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = answer_of(post(server.port))
            break
        except OSError as exc:
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no answer on port {server.port} ({exc}); its log ends:\n"
                                   + log_tail(server.log)) from None
            time.sleep(0.2)
    if len(got) != len(expected) or any(abs(a - b) > 1e-4
                                        for a, b in zip(got, expected, strict=True)):
        raise RuntimeError(f"wrong scores: {got}, the model gives {expected}")


def log_tail(log: Path, lines: int = 12) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


# --- the systems ----------------------------------------------------------------------------


def launch_app(script: str, python: Path = Path(sys.executable),
               env: Callable[[], dict[str, str]] = dict) -> Callable[[Path, Path], Server]:
    """A launcher for one of bench/apps/serving_*.py, which take --model and --port."""

    def launch(model: Path, scratch: Path) -> Server:
        port, log = free_port(), scratch / f"{Path(script).stem}.log"
        process = spawn([str(python), str(APPS / script), "--model", str(model), "--host", HOST,
                         "--port", str(port)], log, env())
        return Server(process, port, log)

    return launch


def triton_env() -> dict[str, str]:
    """Triton's Python backend stub must load its interpreter's libpython (ENV.md)."""
    libdir = subprocess.run([str(TRITON_PYTHON), "-c", "import sysconfig;"
                             "print(sysconfig.get_config_var('LIBDIR'))"],
                            check=True, capture_output=True, text=True).stdout.strip()
    return {"LD_LIBRARY_PATH": ":".join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))}


def launch_sluice(model: Path, scratch: Path) -> Server:
    """A fresh daemon (its state in ``scratch``, its API on a free port), the model pushed to
    its registry and deployed as a serving function; ``deploy -o json`` names the endpoint."""
    api = free_port()
    env = {**os.environ, "SLUICE_HOME": str(scratch / "home"), "SLUICE_API_PORT": str(api)}
    cli, log = [sys.executable, "-m", "sluice.cli"], scratch / "sluice.log"
    daemon = Server(spawn([*cli, "up", "--no-broker"], log, env), 0, log)

    def sluice(*args: str) -> bytes:
        done = subprocess.run([*cli, *args], env=env, capture_output=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"sluice {' '.join(args)}: {done.stderr.decode().strip()}")
        return done.stdout

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{HOST}:{api}/api/health", timeout=1).close()
                break
            except OSError:
                if daemon.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the daemon did not start; its log ends:\n"
                                       + log_tail(log)) from None
                time.sleep(0.1)
        sluice("models", "push", "mlp", str(model), "--inputs", "x:FP32:64",
               "--outputs", "scores:FP32:8")
        status = json.loads(sluice("deploy", "--name", "mlp", "--model", "mlp:1", "--batching",
                                   "max_batch=64,latency_ms=20", "-o", "json"))["status"]
        port = urllib.parse.urlsplit(status["endpoint"]).port
        if port is None:
            raise RuntimeError(f"no port in the endpoint {status['endpoint']!r}")
    except BaseException:
        stop(daemon)
        raise
    return Server(daemon.process, port, log, tuple(int(pid) for pid in status["pids"]))


SYSTEMS = {s.name: s for s in [
    System("sluice", "sluice (batching 64, 20 ms)", 2000, launch_sluice),
    System("unbatched", "unbatched (uvicorn, batch 1)", 2000, launch_app("serving_unbatched.py")),
    System("http-limit", "HTTP limit (uvicorn, no model)", 2000,
           launch_app("serving_http_limit.py")),
    System("ray", "Ray Serve (@serve.batch 64, 10 ms)", 100, launch_app("serving_ray.py")),
    System("triton", "Triton (dynamic batcher 64, 2 ms)", 1000,
           launch_app("serving_pytriton.py", TRITON_PYTHON, triton_env)),
]}


# --- load -----------------------------------------------------------------------------------


def settle(port: int, timeout: float = 20.0) -> None:
    """Waits until the last probe's backlog is gone: two answers in a row within the bound."""
    deadline, quick = time.monotonic() + timeout, 0
    while quick < 2 and time.monotonic() < deadline:
        started = time.monotonic()
        try:
            post(port, timeout=2.0)
            quick = quick + 1 if time.monotonic() - started < P99_MS / 1000 else 0
        except OSError:
            quick = 0
        time.sleep(0.1)


def describe(result: loadgen.LoadResult) -> str:
    latency = result["latency_ms"]
    behind = "  GENERATOR BEHIND" if result["generator_behind"] else ""
    return (f"p50 {latency['p50']:7.2f} ms  p99 {latency['p99']:7.2f} ms  failures "
            f"{100 * loadgen.failure_share(result):5.2f}%  achieved "
            f"{result['achieved_rate']:8,.0f}/s{behind}")


def measure(system: System, model: Path, expected: list[float], settings: Settings,
            scratch: Path) -> Outcome:
    """Start, check, search the sustainable rate, measure the load points, stop (always)."""
    outcome = Outcome(system.label)

    def probe(rate: float, seconds: float, pattern: Literal["poisson", "onoff"] = "poisson",
              what: str = "probe") -> loadgen.LoadResult:
        settle(server.port)
        result = loadgen.run(HOST, server.port, PATH, BODY, HEADERS, rate, seconds,
                             pattern=pattern, on=ON_S, off=OFF_S, warmup=settings.warmup_s,
                             cpu=LOAD_CORE)
        tag = pattern if what != "probe" else (
            "pass" if loadgen.passes(result, P99_MS, MAX_FAILURES) else "FAIL")
        say(f"[{system.name}] {what:>6} {rate:8,.0f}/s: {describe(result)}  {tag}")
        if result["generator_behind"]:  # something else took the load core: give it a moment
            outcome.behind_probes += 1
            time.sleep(2.0)
        return result

    say(f"[{system.name}] starting")
    server = system.launch(model, scratch)
    try:
        wait_answers(server, expected)
        say(f"[{system.name}] answers correctly on port {server.port}")
        found = loadgen.sustainable_rate(lambda rate: probe(rate, settings.probe_s),
                                         start=system.start_rate, factor=settings.factor,
                                         bisect_probes=settings.bisect, p99_ms=P99_MS,
                                         max_failure_share=MAX_FAILURES)
        outcome.rate = rate = found.rate
        say(f"[{system.name}] sustainable: " + (f"{rate:,.0f}/s" if rate else "none"))
        if rate is None:
            return outcome
        for key, share, pattern in POINTS:
            outcome.points[key] = probe(share * rate, settings.point_s, pattern, key)
        return outcome
    finally:
        stop(server)
        say(f"[{system.name}] stopped")


def compute_limit(model: torch.nn.Module, seconds: float) -> float:
    """Samples/s of the forward at batch 64 in this process, on the server core, one thread."""
    affinity, threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, {SERVER_CORE})
    torch.set_num_threads(1)
    try:
        batch = torch.randn(64, 64)
        with torch.inference_mode():
            for _ in range(50):
                model(batch)
            count, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < seconds:
                model(batch)
                count += 1
        return 64 * count / elapsed
    finally:
        os.sched_setaffinity(0, affinity)
        torch.set_num_threads(threads)


# --- report ---------------------------------------------------------------------------------


def table(outcomes: dict[str, Outcome], compute: tuple[float, float]) -> list[str]:
    def cell(result: loadgen.LoadResult | None) -> str:
        if result is None:
            return "-"
        marks = ("!" if loadgen.failure_share(result) >= MAX_FAILURES else "") + (
            "*" if result["generator_behind"] else "")
        return f"{result['latency_ms']['p50']:.2f} / {result['latency_ms']['p99']:.2f}{marks}"

    lines = ["| system | sustainable req/s | p50 / p99 ms at 10% | at 50% | at 90% | "
             "on/off at 50% |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for o in outcomes.values():
        rate = (f"{o.rate:,.0f}" if o.rate else f"failed: {o.problem}" if o.problem else "none")
        lines.append(f"| {o.label} | {rate} | "
                     + " | ".join(cell(o.points.get(key)) for key, _, _ in POINTS) + " |")
    return [*lines, "| compute limit (forward at batch 64, in process; before / after the "
            f"servers) | {compute[0]:,.0f} / {compute[1]:,.0f} samples/s | | | | |"]


def verdict(outcomes: dict[str, Outcome]) -> tuple[bool, list[str]]:
    """The three targets, each PASS/FAIL, or n/a when a system it needs did not run."""

    def rate(name: str) -> float | None:
        return (outcomes[name].rate or 0.0) if name in outcomes else None

    def idle_p50(name: str) -> float | None:
        point = outcomes[name].points.get("10%") if name in outcomes else None
        return point["latency_ms"]["p50"] if point else None

    def over(mine: float | None, theirs: float | None) -> float | None:
        return mine / theirs if mine is not None and theirs else None

    best = max((r for r in map(rate, ("ray", "triton")) if r is not None), default=None)
    checks = [("sluice / max(Ray Serve, Triton) sustainable rate", over(rate("sluice"), best),
               ">=", MIN_VS_BASELINES),
              ("sluice / HTTP limit sustainable rate", over(rate("sluice"), rate("http-limit")),
               ">=", MIN_VS_HTTP),
              ("sluice p50 / unbatched p50, each at 10% of its rate",
               over(idle_p50("sluice"), idle_p50("unbatched")), "<=", MAX_IDLE_P50)]
    lines, ok = [], "sluice" not in outcomes or bool(outcomes["sluice"].rate)
    for what, value, sign, target in checks:
        if value is None:
            lines.append(f"- {what}: n/a (a system it needs did not run or sustained nothing)")
            continue
        passed = value >= target if sign == ">=" else value <= target
        ok = ok and passed
        lines.append(f"- {what}: {value:.2f}x (target {sign} {target}x): "
                     f"{'PASS' if passed else 'FAIL'}")
    return ok, lines


# --- main -----------------------------------------------------------------------------------


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def check_tools(names: list[str]) -> str | None:
    """Why the benchmark cannot run here, or None."""
    if not shutil.which("taskset"):
        return "taskset is not installed: apt-get install -y util-linux"
    if not shutil.which("cc"):
        return loadgen.NO_COMPILER
    if not {SERVER_CORE, LOAD_CORE} <= os.sched_getaffinity(0):
        return f"needs cores {SERVER_CORE} and {LOAD_CORE} (server and load pinned apart)"
    if "ray" in names and importlib.util.find_spec("ray") is None:
        return "Ray Serve is not installed: pip install -e '.[bench]' (or leave out ray)"
    if "triton" in names and not TRITON_PYTHON.exists():
        return "Triton's environment is missing: make triton-env (or leave out triton)"
    return None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated, of {', '.join(SYSTEMS)} (default: all)")
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds per search probe after 1 s of warm-up (default 3); each "
                             "load point runs twice as long")
    parser.add_argument("--quick", action="store_true", help="short probes: a smoke run")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    args = parser.parse_args()
    args.names = [name.strip() for name in args.systems.split(",") if name.strip()]
    if unknown := sorted(set(args.names) - set(SYSTEMS)):
        parser.error(f"unknown systems: {', '.join(unknown)}")
    return args


def main() -> int:
    args = parse_args()
    if problem := check_tools(args.names):
        say(problem)
        return 2
    settings = (Settings(1.0, 0.5, 1.0, 2.0, 2) if args.quick else
                Settings(args.duration, 1.0, 2 * args.duration, 1.5, 4))
    loadgen.build()
    outcomes: dict[str, Outcome] = {}
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        model_file = save_mlp(build_mlp(), Path(tmp) / "mlp.pt")
        model = torch.load(model_file, weights_only=False)
        (expected,) = scores(model, [sample()])
        seconds = 1.0 if args.quick else 3.0
        before = compute_limit(model, seconds)
        say(f"compute limit: {before:,.0f} samples/s (forward at batch 64, one core)")
        for name in args.names:
            system, scratch = SYSTEMS[name], Path(tmp) / name
            scratch.mkdir()
            try:
                outcomes[name] = measure(system, model_file, expected, settings, scratch)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                say(f"[{name}] failed: {exc}")
                outcomes[name] = Outcome(system.label, problem=str(exc).splitlines()[0])
        after = compute_limit(model, seconds)  # against `before`: did the machine's speed drift?
        say(f"compute limit again: {after:,.0f} samples/s")
    ok, targets = verdict(outcomes)
    lines = table(outcomes, (before, after))
    behind = sum(o.behind_probes for o in outcomes.values())
    notes = ("p50 / p99 in ms from each request's intended send time. `!`: failures >= 0.1% at "
             "that point; `*`: the generator fell behind its schedule (another process took "
             f"its core; {behind} probes in all).")
    print("\n".join([*lines, "", notes, "", *targets]))
    if args.record:
        setup = (f"each server on core {SERVER_CORE} (torch on one thread), the open-loop "
                 f"generator (bench/loadgen.py) on core {LOAD_CORE}; sustainable = the highest "
                 f"offered rate with p99 <= {P99_MS:.0f} ms and < {MAX_FAILURES:.1%} failures "
                 f"({settings.probe_s:g} s probes); load points {settings.point_s:g} s, on/off "
                 f"{ON_S:g} s / {OFF_S:g} s.")
        record("Model-serving batching", setup,
               shlex.join(["python", "bench/serving_batching.py", *sys.argv[1:]]), lines,
               notes + "\n\n" + "\n".join(targets))
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # every server was stopped on the way out
        raise SystemExit(130) from None
