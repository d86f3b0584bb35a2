"""Function logs: JSON lines in, tail and follow out, rotation by size."""

from __future__ import annotations

import asyncio
import json

from sluice.platform.logs import FunctionLog


def run(coro):
    return asyncio.run(coro)


def test_worker_output_passes_json_through_and_wraps_plain_text(tmp_path):
    async def scenario():
        log = FunctionLog(tmp_path / "f.jsonl", "f")
        log.worker_output(b'{"level": "info", "message": "structured"}\n', 0, "stdout")
        log.worker_output(b"Traceback (most recent call last):\n", 1, "stderr")
        log.worker_output(b"\n", 1, "stdout")  # blank lines are dropped
        lines = [json.loads(line) async for line in log.read(tail=0, follow=False)]
        log.close()
        return lines

    lines = run(scenario())
    assert lines[0] == {"level": "info", "message": "structured"}
    assert lines[1]["level"] == "error" and lines[1]["stream"] == "stderr"
    assert lines[1]["worker"] == 1 and lines[1]["message"].startswith("Traceback")
    assert len(lines) == 2


def test_tail_and_follow(tmp_path):
    async def scenario():
        log = FunctionLog(tmp_path / "f.jsonl", "f")
        for i in range(5):
            log.event("info", f"line {i}")
        seen = []

        async def follow():
            async for line in log.read(tail=2, follow=True):
                seen.append(json.loads(line)["message"])

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.01)
        log.event("info", "line 5")
        await asyncio.sleep(0.01)
        log.close()  # ends the follower
        await asyncio.wait_for(task, 1)
        return seen

    assert run(scenario()) == ["line 3", "line 4", "line 5"]


def test_rotation_keeps_one_previous_file(tmp_path):
    async def scenario():
        log = FunctionLog(tmp_path / "f.jsonl", "f", max_bytes=300)
        for i in range(20):
            log.event("info", f"message number {i}")
        log.close()

    run(scenario())
    assert (tmp_path / "f.jsonl.1").exists()
    assert (tmp_path / "f.jsonl").stat().st_size <= 300
