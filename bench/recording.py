"""Appending a benchmark run to bench/RESULTS.md, with the machine it ran on."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores, {cpu}"


def record(title: str, setup: str, command: str, table: list[str], summary: str) -> None:
    """One dated section: what ran where, the table, the verdict."""
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach section is one recorded run.\n")
    with RESULTS.open("a") as out:
        out.write(f"\n## {title} ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)\n\n"
                  f"Machine: {machine()}; {setup} Command: `{command}`.\n\n"
                  + "\n".join(table) + f"\n\n{summary}\n")
