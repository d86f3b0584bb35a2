"""Schedule accuracy: how late a 1-second cron interval reaches the handler, for N fires.

Baseline in the same run: a bare asyncio loop sleeping until each whole second and measuring
its own lateness (the floor for any timer-driven scheduler on this machine at this moment).
Target (issue 4): p99 lateness under 100 ms.

    python bench/cron_accuracy.py [--fires 60] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from platform_process import Platform
from recording import record  # noqa: E402 - bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
TARGET_P99_MS = 100.0


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


def sluice_fires(fires: int, tmp: Path) -> list[float]:
    fires_file = tmp / "fires.jsonl"
    (tmp / "cron_handler.py").write_text((ROOT / "bench/apps/cron_handler.py").read_text())
    (tmp / "fn.yaml").write_text(yaml.safe_dump({
        "name": "tick", "handler": "cron_handler:handler", "env": {"FIRES_FILE": str(fires_file)},
        "triggers": {"web": {"kind": "http"}, "tick": {"kind": "cron", "interval": "1s"}}}))
    platform = Platform(tmp / "home", "--no-broker")
    try:
        platform.run("deploy", str(tmp / "fn.yaml"))
        while not fires_file.exists() or len(fires_file.read_text().splitlines()) < fires:
            time.sleep(0.5)
            print(f"  {len(fires_file.read_text().splitlines()) if fires_file.exists() else 0}"
                  f"/{fires} fires", file=sys.stderr, end="\r", flush=True)
        print(file=sys.stderr)
    finally:
        platform.stop()
    return [json.loads(line)["late_ms"] for line in fires_file.read_text().splitlines()][:fires]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fires", type=int, default=60)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sluice = sluice_fires(args.fires, Path(tmp))
    bare = asyncio.run(bare_timer(min(args.fires, 20)))
    lines = ["| timer | fires | p50 late ms | p99 late ms |", "| --- | --- | --- | --- |",
             f"| bare asyncio sleep-until (floor) | {len(bare)} | "
             f"{statistics.median(bare):.1f} | {percentile(bare, 0.99):.1f} |",
             f"| sluice cron interval 1s, scheduled instant to handler | {len(sluice)} | "
             f"{statistics.median(sluice):.1f} | {percentile(sluice, 0.99):.1f} |"]
    p99 = percentile(sluice, 0.99)
    verdict = "PASS" if p99 < TARGET_P99_MS else "FAIL"
    summary = (f"sluice cron p99 lateness {p99:.1f} ms (target < {TARGET_P99_MS:g} ms: "
               f"{verdict}). On-demand job start latency: not measured yet (job functions are "
               "not built).")
    print("\n".join(lines))
    print(summary)
    if args.record:
        record("Cron schedule accuracy", "daemon with one http function, 1-second interval.",
               f"python bench/cron_accuracy.py --fires {args.fires} --record", lines, summary)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
