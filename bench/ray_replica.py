"""One replica's HTTP and serving throughput on the Ray platform against the local platform, in
the same run, and the time from `sluice deploy` to a ready function on each.

What it measures:

- throughput: examples/echo.py deployed with one replica of one worker on `sluice up` (a worker
  process of the platform's) and on `sluice up --platform ray --ray-cpus 2` (the same worker
  command in a Ray actor, serving its port itself through SO_REUSEPORT); each worker in turn is
  pinned to core 0 and loaded by wrk pinned to core 1 (one thread, 32 connections, a POST of 16
  floats, as bench/http_overhead.py does). The two platforms stay up for the whole run and are
  measured alternately over rounds, the order flipping each round; medians are reported.
- serving throughput: the same, for a serving function (the torch MLP 64->512->512->8 of
  bench/serving_batching.py pushed to each platform's registry, batching 64 with a 1 s
  objective (a throughput test: no request is shed, even on a busy shared machine), torch on
  one thread), loaded with V2 requests of one row each.
- deploy to ready: a fresh function's `sluice deploy` (CLI to answer, the CLI's own start
  included) and the platform's own "generation 1 ready in ..." (build to ready), medians over
  ``--deploys`` deploys on each platform, alternating.

Target (issue 8): Ray's req/s >= 0.8x the local platform's for the same echo (and, reported,
for the same serving function).

    python bench/ray_replica.py [--rounds 5] [--duration 5] [--deploys 5] [--record]
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from apps.serving_model import PATH, build_mlp, request_body, sample, save_mlp
from http_overhead import (  # bench/ is on sys.path when run as a script
    CONNECTIONS,
    ECHO,
    LOAD_CORE,
    SERVER_CORE,
    Sample,
    check_tools,
    pin,
    run_wrk,
    wait_answers,
    write_script,
)
from platform_process import Platform
from recording import record

MIN_RATIO = 0.8
RAY_CPUS = 2


@dataclass
class Contender:
    name: str
    platform: Platform
    url: str = ""  # the echo's
    pid: int = 0
    serving_url: str = ""  # the MLP's V2 infer URL
    serving_pid: int = 0


def deploy(platform: Platform, name: str) -> tuple[dict, float]:
    """Deploys the echo as ``name`` (one replica, one worker); its status and the CLI's time."""
    started = time.monotonic()
    out = platform.run("deploy", str(ECHO), "--name", name, "--workers", "1", "--replicas", "1",
                       "-o", "json")
    return json.loads(out)["status"], time.monotonic() - started


def ready_in(platform: Platform, name: str) -> float:
    """The platform's own build-to-ready time of the function's generation 1, from its log."""
    for line in platform.run("logs", name, "--tail", "0").decode().splitlines():
        match = re.search(r"generation 1 ready in ([\d.]+)s", json.loads(line)["message"])
        if match:
            return float(match.group(1))
    raise RuntimeError(f"no 'ready in' line in the log of {name}")


def start(name: str, home: Path, model: Path, *args: str) -> Contender:
    # torch on one thread in the local worker, as Ray gives its half-CPU actor
    platform = Platform(home, "--no-broker", *args, env={"OMP_NUM_THREADS": "1"})
    try:
        status, _ = deploy(platform, "echo")
        platform.run("models", "push", "mlp", str(model), "--inputs", "x:FP32:64",
                     "--outputs", "scores:FP32:8")
        serving = json.loads(platform.run(
            "deploy", "--name", "mlp", "--model", "mlp:1", "--batching",
            "max_batch=64,latency_ms=1000", "--workers", "1", "--replicas", "1", "-o", "json"))
    except BaseException:
        platform.stop()
        raise
    (pid,) = status["pids"]
    (serving_pid,) = serving["status"]["pids"]
    return Contender(name, platform, status["endpoint"] + "/", int(pid),
                     serving["status"]["endpoint"] + PATH, int(serving_pid))


def measure(contender: Contender, seconds: int, script: Path, serving: bool = False) -> Sample:
    url, pid = ((contender.serving_url, contender.serving_pid) if serving
                else (contender.url, contender.pid))
    if serving:
        wait_scores(url)
    else:
        wait_answers(url)
    pin(pid, SERVER_CORE)
    run_wrk(url, 1, script)  # warm-up
    return run_wrk(url, seconds, script)


def wait_scores(url: str) -> None:
    """Polls until the serving function answers a V2 request of one row with 8 scores."""
    wait_answers(url, 60.0, request_body(sample()).decode(),
                 lambda answer: None if answer["outputs"][0]["shape"] == [1, 8]
                 else "not 8 scores")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--duration", type=int, default=5,
                        help="seconds of measured load per platform and round (default 5)")
    parser.add_argument("--deploys", type=int, default=5,
                        help="deploys timed on each platform (default 5)")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    problem = check_tools()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="sluice-bench-ray-") as tmp:
        scratch = Path(tmp)
        script = write_script(scratch / "post.lua")
        v2_script = write_script(scratch / "v2.lua", request_body(sample()).decode())
        model = save_mlp(build_mlp(), scratch / "mlp.pt")
        started = time.monotonic()
        ray = start("ray", scratch / "ray", model, "--platform", "ray", "--ray-cpus",
                    str(RAY_CPUS))
        ray_up = time.monotonic() - started
        try:
            local = start("local", scratch / "local", model)
        except BaseException:
            ray.platform.stop()
            raise
        try:
            samples: dict[str, list[Sample]] = {"local": [], "ray": []}
            served: dict[str, list[Sample]] = {"local": [], "ray": []}
            for round_number in range(args.rounds):
                order = [local, ray] if round_number % 2 == 0 else [ray, local]
                for contender in order:
                    for kind, into, lua in (("echo", samples, script),
                                            ("serving", served, v2_script)):
                        one = measure(contender, args.duration, lua, kind == "serving")
                        into[contender.name].append(one)
                        print(f"round {round_number + 1}: {contender.name:<6} {kind:<8} "
                              f"{one.rps:>9,.0f} req/s  p99 {one.p99_ms:6.2f} ms",
                              file=sys.stderr, flush=True)
            deploys: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
            for n in range(args.deploys):
                for contender in [local, ray] if n % 2 == 0 else [ray, local]:
                    name = f"fresh-{n}"
                    _, cli = deploy(contender.platform, name)
                    deploys[contender.name].append((cli, ready_in(contender.platform, name)))
                    contender.platform.run("delete", name)
                    print(f"deploy {n + 1}: {contender.name:<6} {cli:.2f} s from the CLI",
                          file=sys.stderr, flush=True)
        finally:
            for contender in (local, ray):
                contender.platform.stop()
    lines = ["| platform | function | req/s (median) | min - max | p99 ms | req/s vs local | "
             "deploy to ready: CLI s | platform s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    ratios = {}
    for kind, runs_by in (("echo", samples), ("serving MLP", served)):
        medians = {name: Sample(statistics.median(s.rps for s in runs),
                                statistics.median(s.p99_ms for s in runs))
                   for name, runs in runs_by.items()}
        ratios[kind] = medians["ray"].rps / medians["local"].rps
        for name in ("local", "ray"):
            m, runs = medians[name], runs_by[name]
            low, high = min(s.rps for s in runs), max(s.rps for s in runs)
            cli = statistics.median(d[0] for d in deploys[name])
            own = statistics.median(d[1] for d in deploys[name])
            lines.append(f"| {name} | {kind} | {m.rps:,.0f} | {low:,.0f} - {high:,.0f} | "
                         f"{m.p99_ms:.2f} | {m.rps / medians['local'].rps:.2f}x | {cli:.2f} | "
                         f"{own:.2f} |")
    ratio = ratios["echo"]
    ok = ratio >= MIN_RATIO
    verdict = (f"- Ray / local req/s per replica, echo: {ratio:.2f}x (target >= {MIN_RATIO}x): "
               f"{'PASS' if ok else 'FAIL'}\n- Ray / local req/s per replica, serving MLP: "
               f"{ratios['serving MLP']:.2f}x\n- `sluice up --platform ray` (a new local Ray) "
               f"was up in {ray_up:.1f} s; deploy to ready is the echo's")
    print("\n".join([*lines, "", verdict]))
    if args.record:
        setup = (f"one replica of one worker of examples/echo.py (POST of 16 floats) and of a "
                 f"serving function (the MLP of bench/serving_batching.py, batching 64 / 1 s, "
                 f"V2 requests of one row) on each platform, the worker pinned to core "
                 f"{SERVER_CORE}, `wrk -t1 -c{CONNECTIONS}` on core {LOAD_CORE}; local Ray of "
                 f"{RAY_CPUS} CPUs; medians of {args.rounds} "
                 f"alternating rounds of {args.duration} s; deploy to ready: medians of "
                 f"{args.deploys} fresh deploys each, alternating.")
        record("Ray platform: one replica's HTTP and serving throughput, deploy to ready",
               setup,
               shlex.join(["python", "bench/ray_replica.py", *sys.argv[1:]]), lines, verdict)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # the platforms were stopped on the way out
        raise SystemExit(130) from None
