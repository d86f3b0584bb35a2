"""Workers on Ray without a Ray: what a replica's resources ask of each worker's actor, the port
the platform holds, why an actor died; and the supervisor over an in-memory launcher (a worker
that dies is restarted, wherever workers run)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from sluice.platform.logs import FunctionLog
from sluice.platform.ray_cluster import ray_resources, why_dead
from sluice.platform.ray_workers import hold_port, worker_options
from sluice.platform.supervisor import OnLine, WorkerSet
from sluice.spec import Resources, parse_spec
from sluice.worker.config import WorkerConfig


def spec(**fields: object):
    return parse_spec({"name": "f", "handler": "h:handler", **fields})


def test_a_replica_without_resources_takes_half_a_cpu():
    assert worker_options(spec()) == {"num_cpus": 0.5, "num_gpus": 0}


def test_a_replicas_resources_are_shared_by_its_workers():
    assert worker_options(spec(workers=4, resources={"cpu": 2, "gpu": 1, "memory": "1Gi"})) == {
        "num_cpus": 0.5, "num_gpus": 0.25, "memory": 2**28}


def test_a_job_still_takes_one_cpu_by_default():
    assert ray_resources(Resources()) == {"num_cpus": 1, "num_gpus": 0}


def test_the_held_port_refuses_connections_until_a_worker_listens_on_it():
    held = hold_port("127.0.0.1", None)
    port = held.getsockname()[1]
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
        with socket.socket() as other, pytest.raises(OSError):  # not without SO_REUSEPORT
            other.bind(("127.0.0.1", port))
        with socket.socket() as worker:  # as a worker with reuse_port binds it
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", port))
            worker.listen(8)
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                accepted, _ = worker.accept()
                accepted.close()
    finally:
        held.close()


def test_why_an_actor_died_is_rays_reason_when_it_gives_one():
    killed = RuntimeError("The actor died unexpectedly before finishing this task.\n"
                          "\tclass_name: WorkerActor\n"
                          "The actor is dead because it was killed by `ray.kill`.")
    assert why_dead(killed) == "it was killed by `ray.kill`"
    assert why_dead(RuntimeError("node lost\nmore")) == "node lost"


class FakeWorker:
    """A worker 'process' in memory: ready at once, exits when crashed or stopped."""

    pids = iter(range(1000, 2000))

    def __init__(self, on_line: OnLine) -> None:
        self.pid = next(self.pids)
        self.returncode: int | None = None
        self._exited = asyncio.get_running_loop().create_future()
        on_line("control", b'{"event": "ready"}\n')

    def exit(self, code: int) -> None:
        if not self._exited.done():
            self.returncode = code
            self._exited.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    async def stop(self, timeout: float) -> bool:
        self.exit(0)
        return False

    def describe_exit(self) -> str:
        return f"exited with code {self.returncode}"


def test_the_supervisor_restarts_a_worker_that_dies_wherever_it_runs(tmp_path: Path):
    async def main() -> None:
        started: list[FakeWorker] = []

        async def launch(config: WorkerConfig, path: Path, on_line: OnLine) -> FakeWorker:
            started.append(FakeWorker(on_line))
            return started[-1]

        restarts: list[int] = []
        configs = [WorkerConfig("f", "h:handler", None, worker_id=i) for i in range(2)]
        log = FunctionLog(tmp_path / "f.jsonl", "f")
        workers = WorkerSet(configs, tmp_path, log, launch, on_change=lambda: None,
                            on_restart=restarts.append)
        await workers.start()
        assert workers.ready == {0, 1} and len(started) == 2
        started[1].exit(-9)  # as when its Ray actor is killed
        for _ in range(200):
            if len(started) == 3 and workers.ready == {0, 1}:
                break
            await asyncio.sleep(0.01)
        assert restarts == [-9] and workers.workers[1].process is started[2]
        await workers.stop()
        log.close()
        assert all(w.returncode == 0 for w in (started[0], started[2]))
        assert "worker 1 exited with code -9; restarting in 0.1s" in (tmp_path / "f.jsonl"
                                                                      ).read_text()

    asyncio.run(main())
