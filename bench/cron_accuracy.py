"""Schedule accuracy and run start latency (issue 4).

One daemon, two functions on a 1-second cron interval for N fires each, at the same time:
- an http function: lateness from the scheduled instant to its handler (a warm worker);
- a job function: lateness from the scheduled instant to the fire (the run recorded), and to
  its handler's first line (a fresh process per run).
Then on-demand runs: from launching `sluice run NAME --detach` to the handler's first line.

Baselines in the same run: a bare asyncio loop sleeping until each whole second (the floor for
any timer-driven scheduler on this machine at this moment), and a bare `python -c` launched
from this process to its first line (the floor for any process-per-run start).
Targets: p99 fire lateness under 100 ms; median on-demand start under 1 s.

    python bench/cron_accuracy.py [--fires 60] [--runs 20] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from platform_process import Platform
from recording import record  # noqa: E402 - bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
TARGET_P99_MS = 100.0
TARGET_START_S = 1.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def bare_timer(fires: int) -> list[float]:
    late = []
    for _ in range(fires):
        due = int(time.time()) + 1
        await asyncio.sleep(due - time.time())
        late.append((time.time() - due) * 1000)
    return late


def bare_process_starts(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.time()
        line = subprocess.run([sys.executable, "-c", "import time; print(time.time())"],
                              capture_output=True, text=True, check=True).stdout
        out.append(float(line) - started)
    return out


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def scheduled_fires(platform: Platform, tmp: Path, fires: int) -> tuple[list[float], list[float],
                                                                          list[float]]:
    """(http handler lateness, job fire lateness, job handler lateness), in ms."""
    http_file, job_file = tmp / "http.jsonl", tmp / "job.jsonl"
    for app in ("cron_handler.py", "job_handler.py"):
        (tmp / app).write_text((ROOT / "bench/apps" / app).read_text())
    tick = {"kind": "cron", "interval": "1s"}
    (tmp / "http.yaml").write_text(yaml.safe_dump({
        "name": "tick", "handler": "cron_handler:handler", "env": {"FIRES_FILE": str(http_file)},
        "triggers": {"web": {"kind": "http"}, "tick": tick}}))
    (tmp / "job.yaml").write_text(yaml.safe_dump({
        "name": "tick-job", "kind": "job", "handler": "job_handler:handler",
        "env": {"STARTS_FILE": str(job_file)}, "triggers": {"tick": tick}}))
    platform.run("deploy", str(tmp / "http.yaml"))
    platform.run("deploy", str(tmp / "job.yaml"))
    deadline = time.monotonic() + fires * 2 + 30
    shown = -1
    while len(lines(http_file)) < fires or len(lines(job_file)) < fires:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(lines(http_file))} http and {len(lines(job_file))} job "
                             f"fires in {fires * 2 + 30} s; see {platform.env['SLUICE_HOME']}")
        time.sleep(1)
        done = min(len(lines(http_file)), len(lines(job_file)))
        if done // 10 != shown:  # a line every 10 fires
            shown = done // 10
            print(f"  {len(lines(http_file))}/{fires} http fires, {len(lines(job_file))}/{fires}"
                  " job fires", file=sys.stderr, flush=True)
    platform.run("schedule", "pause", "tick")
    platform.run("schedule", "pause", "tick-job")
    runs = json.loads(platform.run("runs", "tick-job", "--limit", "1000", "-o", "json"))
    fired = [(r["created"] - r["scheduled"]) * 1000 for r in runs if r["scheduled"]][-fires:]
    started = [(s["at"] - s["scheduled"]) * 1000 for s in lines(job_file)][:fires]
    return [f["late_ms"] for f in lines(http_file)][:fires], fired, started


def on_demand_starts(platform: Platform, tmp: Path, runs: int) -> list[float]:
    """Seconds from launching `sluice run --detach` to the handler's first line."""
    starts_file = tmp / "demand.jsonl"
    (tmp / "demand.yaml").write_text(yaml.safe_dump({
        "name": "demand", "kind": "job", "handler": "job_handler:handler",
        "env": {"STARTS_FILE": str(starts_file)}}))
    platform.run("deploy", str(tmp / "demand.yaml"))
    out = []
    for i in range(runs):
        launched = time.time()
        run_id = platform.run("run", "demand", "--detach").decode().strip()
        while len(lines(starts_file)) <= i:
            time.sleep(0.005)
        entry = lines(starts_file)[i]
        assert entry["run"] == run_id, (entry, run_id)
        out.append(entry["at"] - launched)
        time.sleep(0.2)  # let the run's process exit: starts measured one at a time
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fires", type=int, default=60)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        platform = Platform(tmp / "home", "--no-broker")
        try:
            http, fired, job_started = scheduled_fires(platform, tmp, args.fires)
            demand = on_demand_starts(platform, tmp, args.runs)
        finally:
            platform.stop()
    bare = asyncio.run(bare_timer(min(args.fires, 20)))
    bare_starts = bare_process_starts(args.runs)

    def row(what: str, values: list[float], unit: float = 1.0) -> str:
        return (f"| {what} | {len(values)} | {statistics.median(values) * unit:.1f} | "
                f"{percentile(values, 0.99) * unit:.1f} |")

    table = ["| measurement | n | p50 ms | p99 ms |", "| --- | ---: | ---: | ---: |",
             row("bare asyncio sleep-until (timer floor)", bare),
             row("cron 1s, http function: scheduled instant to handler", http),
             row("cron 1s, job function: scheduled instant to run recorded (the fire)", fired),
             row("cron 1s, job function: scheduled instant to handler's first line", job_started),
             row("bare `python -c` launch to first line (process floor)", bare_starts, 1000),
             row("`sluice run --detach` launch to handler's first line", demand, 1000)]
    fire_p99 = max(percentile(http, 0.99), percentile(fired, 0.99))
    start_p50 = statistics.median(demand)
    fire_ok, start_ok = fire_p99 < TARGET_P99_MS, start_p50 < TARGET_START_S
    summary = "\n".join([
        f"- fire lateness p99 {fire_p99:.1f} ms, worst of http and job (target < "
        f"{TARGET_P99_MS:g} ms): {'PASS' if fire_ok else 'FAIL'}",
        f"- on-demand run start median {start_p50 * 1000:.0f} ms (target < "
        f"{TARGET_START_S * 1000:.0f} ms): {'PASS' if start_ok else 'FAIL'}; "
        f"{start_p50 / statistics.median(bare_starts):.1f}x a bare Python start",
    ])
    print("\n".join(table))
    print(summary)
    if args.record:
        record("Cron schedule accuracy and run start latency",
               "one daemon, an http and a job function on 1-second intervals at once, then "
               "on-demand runs one at a time.",
               f"python bench/cron_accuracy.py --fires {args.fires} --runs {args.runs} --record",
               table, summary)
    return 0 if fire_ok and start_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
