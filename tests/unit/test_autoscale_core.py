"""Autoscaling's pure core (the policy on a fake clock, the load a worker measures) and its
moves on a WorkerSet whose workers are in-memory stand-ins (no processes)."""

from __future__ import annotations

import asyncio
import doctest
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import sluice.platform.autoscale
import sluice.worker.load
from sluice.errors import SpecError
from sluice.platform.autoscale import (
    Autoscaler,
    Decision,
    ScalePolicy,
    ScaleSettings,
    initial_replicas,
    scaled_replicas,
)
from sluice.platform.logs import FunctionLog
from sluice.platform.supervisor import OnLine, WorkerSet
from sluice.spec import parse_spec
from sluice.worker.config import WorkerConfig
from sluice.worker.load import LoadMeter

S = ScaleSettings(min=1, max=3, target=0.5, up_after=2.0, down_after=10.0)
UP = "load 0.9 workers over the last 2 s"


@pytest.mark.parametrize(("settings", "samples", "expected"), [
    pytest.param(S, [(0, 1, 0.9), (1, 1, 0.9), (2, 1, 0.9)],
                 [None, None, Decision(2, UP)], id="sustained-load-adds-one-after-up_after"),
    pytest.param(S, [(0, 1, 0.9), (1, 1, 0.3), (2, 1, 0.9), (3, 1, 0.9)],
                 [None, None, None, None], id="a-dip-starts-the-up-window-over"),
    pytest.param(S, [(0, 1, 0.9), (1, 1, 0.9), (2, 1, 0.9), (3, 2, 1.1), (4, 2, 1.1),
                     (5, 2, 1.1)],
                 [None, None, Decision(2, UP), None, None,
                  Decision(3, "load 1.1 workers over the last 2 s")],
                 id="each-step-starts-the-windows-over"),
    pytest.param(S, [(0, 1, 5.0), (2, 1, 5.0)],
                 [None, Decision(2, "load 5.0 workers over the last 2 s")],
                 id="one-replica-per-step-however-high"),
    pytest.param(S, [(0, 3, 9.0), (5, 3, 9.0), (50, 3, 9.0)], [None, None, None],
                 id="never-above-max"),
    pytest.param(S, [(t, 2, 0.0) for t in range(0, 11, 2)],
                 [None] * 5 + [Decision(1, "load 0.0 workers over the last 10 s")],
                 id="idle-removes-one-after-the-longer-down_after"),
    pytest.param(S, [(0, 2, 0.2), (6, 2, 0.6), (12, 2, 0.2), (21, 2, 0.2)],
                 [None, None, None, None], id="load-back-at-target-starts-the-down-window-over"),
    pytest.param(S, [(0, 1, 0.0), (100, 1, 0.0)], [None, None], id="never-below-min"),
    pytest.param(S, [(0, 2, 0.6), (2, 2, 0.6), (20, 2, 1.0)], [None, None, None],
                 id="steady-within-the-target-stays"),
    pytest.param(ScaleSettings(min=2, max=4, up_after=60), [(0, 1, 0.0)],
                 [Decision(2, "below its minimum of 2")], id="below-min-steps-to-it-at-once"),
    pytest.param(ScaleSettings(min=1, max=2, down_after=60), [(0, 4, 9.0)],
                 [Decision(2, "above its maximum of 2")], id="above-max-steps-to-it-at-once"),
    pytest.param(ScaleSettings(min=1, max=4, target=0.5, up_after=0, workers=2),
                 [(0, 1, 1.0), (1, 1, 1.1)],
                 [None, Decision(2, "load 1.1 workers over the last 0 s")],
                 id="workers-per-replica-share-the-load"),
])
def test_scale_policy(settings, samples, expected):
    policy = ScalePolicy(settings)
    assert [policy.observe(t, replicas, load) for t, replicas, load in samples] == expected


def test_the_policy_reports_what_it_wants_now_within_the_bounds():
    policy = ScalePolicy(S)
    assert policy.desired is None
    policy.observe(0, 1, 1.2)
    assert policy.desired == 3
    policy.observe(1, 1, 9.0)
    assert policy.desired == 3  # max
    policy.observe(2, 1, 0.0)
    assert policy.desired == 1  # min


def spec(**replicas: object) -> object:
    return parse_spec({"name": "fn", "replicas": replicas,
                       "triggers": {"web": {"kind": "http", "max_inflight": 100}}})


def test_settings_come_from_the_spec_and_only_http_and_serving_functions_autoscale():
    settings = ScaleSettings.of(spec(min=0, max=3, target=0.5, scale_up_after=1,
                                     scale_down_after=5))
    assert settings == ScaleSettings(min=1, max=3, target=0.5, target_inflight=100,
                                     up_after=1, down_after=5)
    assert ScaleSettings.of(spec(min=1)) is None
    assert ScaleSettings.of(spec(min=2, max=2)) is None
    assert ScaleSettings.of(spec(min=0, max=1)) is None  # 0 counts as 1: nothing to scale
    kafka_only = parse_spec({"name": "fn", "replicas": {"max": 3}, "triggers": {
        "k": {"kind": "kafka", "topics": ["t"]}}})
    assert ScaleSettings.of(kafka_only) is None
    job = parse_spec({"name": "fn", "kind": "job", "replicas": {"max": 3}})
    assert ScaleSettings.of(job) is None
    assert ScaleSettings.of(spec(max=3, target_inflight=8)).target_inflight == 8


def test_a_workers_load_is_its_busy_share_or_its_requests_over_the_target():
    settings = ScaleSettings(min=1, max=2, target_inflight=10)
    assert settings.worker_load(0.8, 2.0) == 0.8  # a sync handler, or CPU-bound
    assert settings.worker_load(0.1, 25.0) == 2.5  # async, waiting on I/O


@pytest.mark.parametrize(("replicas", "expected"), [
    ({"min": 1, "max": 4, "scale_up_after": 1}, {"min": 3, "max": 4, "scale_up_after": 1.0}),
    ({"min": 1, "max": 2}, {"min": 3, "max": 3}),  # max raised to the new min
    ({"min": 1}, {"min": 3}),  # fixed replicas stay fixed
])
def test_scale_sets_the_minimum_and_autoscaling_goes_on_within_the_bounds(replicas, expected):
    data = scaled_replicas(spec(**replicas), 3, None)
    assert {k: v for k, v in data.items() if k in expected} == expected
    assert "max" in data or "max" not in expected


def test_scale_may_set_the_maximum_but_not_below_the_minimum():
    assert scaled_replicas(spec(min=1), None, 4)["max"] == 4
    with pytest.raises(SpecError, match=r"max \(1\) must be at least min \(2\)"):
        spec(**scaled_replicas(spec(min=2, max=4), None, 1))


def test_a_redeploy_keeps_the_replicas_running_within_the_new_bounds():
    assert initial_replicas(spec(min=1, max=4), None) == 1
    assert initial_replicas(spec(min=1, max=4), 3) == 3
    assert initial_replicas(spec(min=1, max=2), 3) == 2
    assert initial_replicas(spec(min=2, max=4), 1) == 2
    assert initial_replicas(spec(min=2), 5) == 2  # no autoscaling: its replicas


def test_load_meter_reads_busy_share_and_mean_inflight_between_reads():
    now, busy, inflight, cpu = [10.0], [0.0], [0.0], [0.0]
    meter = LoadMeter(lambda: busy[0], lambda: inflight[0], lambda: now[0], lambda: cpu[0])
    now[0], cpu[0] = 11.0, 0.3  # CPU only: parsing, an async handler
    assert meter.read() == (0.3, 0.0)
    now[0], busy[0], inflight[0] = 13.0, 2.5, 6.0  # sync calls, requests held
    assert meter.read() == (1.0, 3.0)  # busy is a share: at most 1
    assert meter.read() == (0.0, 0.0)  # no time passed


@pytest.mark.parametrize("module", [sluice.platform.autoscale, sluice.worker.load])
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


# -- a WorkerSet on in-memory workers --------------------------------------------------------
class FakeWorker:
    """Stands in for a launched worker process: ready at once, stops when asked."""

    def __init__(self, config: WorkerConfig, on_line: OnLine, pid: int) -> None:
        self.config, self.on_line, self.pid = config, on_line, pid
        self.returncode: int | None = None
        self.stopped_with: float | None = None
        self._exited = asyncio.Event()
        on_line("control", json.dumps({"event": "ready"}).encode())

    def report(self, busy: float, inflight: float = 0.0) -> None:
        self.on_line("control", json.dumps({"event": "load", "busy": busy,
                                            "inflight": inflight}).encode())

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    async def stop(self, timeout: float) -> bool:
        self.stopped_with, self.returncode = timeout, 0
        self._exited.set()
        return False

    def describe_exit(self) -> str:
        return "exited"


class FakeLaunch:
    def __init__(self) -> None:
        self.started: list[FakeWorker] = []

    async def __call__(self, config: WorkerConfig, path: Path, on_line: OnLine) -> FakeWorker:
        worker = FakeWorker(config, on_line, 1000 + len(self.started))
        self.started.append(worker)
        return worker


def configs(replicas: int, workers: int = 1) -> list[WorkerConfig]:
    return [WorkerConfig(function="fn", handler="m:h", source_dir=None, worker_id=i,
                         drain_timeout=7.0) for i in range(replicas * workers)]


@pytest.fixture
def log(tmp_path: Path) -> Iterator[FunctionLog]:
    log = FunctionLog(tmp_path / "fn.jsonl", "fn")
    yield log
    log.close()


def worker_set(log: FunctionLog, launch: FakeLaunch, replicas: int = 1,
               workers: int = 1) -> WorkerSet:
    return WorkerSet(configs(replicas, workers), log.path.parent, log, launch,  # type: ignore[arg-type]
                     on_change=lambda: None, on_restart=lambda code: None)


def logged(tmp_path: Path) -> list[str]:
    return [json.loads(line)["message"] for line in (tmp_path / "fn.jsonl").read_text()
            .splitlines()]


def test_workers_join_a_running_set_and_leave_it_drained(tmp_path, log):
    async def main() -> None:
        launch = FakeLaunch()
        workers = worker_set(log, launch)
        await workers.start()
        await workers.add(configs(3)[1:])
        assert workers.ready == {0, 1, 2} and [c.worker_id for c in workers.configs] == [0, 1, 2]
        for worker in launch.started:
            worker.report(0.5)
        assert workers.loads == {0: (0.5, 0.0), 1: (0.5, 0.0), 2: (0.5, 0.0)}

        leaving = launch.started[2]
        await workers.remove({2})
        assert leaving.stopped_with == 2 * 7.0 + 5  # drained as a stop drains: HTTP, Kafka
        assert workers.ready == {0, 1} and 2 not in workers.loads
        leaving.report(0.9)  # a late report of a removed worker counts for nothing
        assert 2 not in workers.loads
        await asyncio.sleep(0)
        assert len(launch.started) == 3  # and it is not restarted

        await workers.stop()
        assert all(w.returncode == 0 for w in launch.started)

    asyncio.run(main())


def test_the_autoscaler_adds_a_replica_under_load_and_removes_it_when_idle(tmp_path, log):
    async def main() -> None:
        launch = FakeLaunch()
        workers = worker_set(log, launch, workers=2)
        await workers.start()
        now = [0.0]
        settings = ScaleSettings(min=1, max=2, target=0.5, up_after=1, down_after=4,
                                 workers=2)
        autoscaler = Autoscaler("fn", settings, workers, lambda n: configs(n, 2),
                                workers.log, clock=lambda: now[0])
        for worker in launch.started:
            worker.report(0.8)
        assert await autoscaler.tick() is None
        now[0] = 1.0
        assert await autoscaler.tick() == Decision(2, "load 1.6 workers over the last 1 s")
        assert autoscaler.replicas == 2 and workers.ready == {0, 1, 2, 3}
        assert autoscaler.status().load == 1.6 and autoscaler.desired == 2

        for worker in launch.started:
            worker.report(0.0)
        for t in (2.0, 4.0, 5.0):
            now[0] = t
            assert await autoscaler.tick() is None
        now[0] = 6.0
        assert await autoscaler.tick() == Decision(1, "load 0.0 workers over the last 4 s")
        assert autoscaler.replicas == 1 and workers.ready == {0, 1}
        for _ in range(100):  # the drain runs beside the autoscaler
            await asyncio.sleep(0)
        assert [w.returncode for w in launch.started] == [None, None, 0, 0]
        messages = logged(tmp_path)
        assert "scaling fn 1 -> 2: load 1.6 workers over the last 1 s" in messages
        assert any(m.startswith("fn runs 2 replicas (the new workers were ready in") for m in
                   messages)
        assert "scaling fn 2 -> 1: load 0.0 workers over the last 4 s" in messages
        await workers.stop()

    asyncio.run(main())


def test_a_scale_up_that_cannot_start_is_logged_and_tried_again_after_a_window(tmp_path, log):
    from sluice.errors import DeployError

    async def main() -> None:
        launch = FakeLaunch()
        workers = worker_set(log, launch)
        await workers.start()
        now = [0.0]
        autoscaler = Autoscaler("fn", ScaleSettings(min=1, max=2, up_after=2), workers,
                                configs, workers.log, clock=lambda: now[0])

        async def refuse(config: WorkerConfig, path: Path, on_line: OnLine) -> FakeWorker:
            raise DeployError("Ray cannot place worker 1: it asks for 4 CPU(s)")

        workers.launch = refuse  # type: ignore[assignment]
        launch.started[0].report(1.0)
        for t in (0.0, 2.0):
            now[0] = t
            await autoscaler.tick()
        assert autoscaler.replicas == 1 and workers.ready == {0}
        assert ("could not scale fn to 2 replicas: Ray cannot place worker 1: it asks for 4 "
                "CPU(s)") in logged(tmp_path)
        now[0] = 3.0
        assert await autoscaler.tick() is None  # a whole window again before the next try
        for t in (4.0, 5.0, 6.0):  # load still above the target for a window: tried again
            launch.started[0].report(1.0)
            now[0] = t
            await autoscaler.tick()
        assert sum("could not scale fn to 2 replicas" in m for m in logged(tmp_path)) == 2
        await workers.stop()

    asyncio.run(main())


def test_the_readme_example_is_an_autoscaled_spec():
    import re

    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [example] = re.findall(r"```yml\n(.*?)```", readme, flags=re.S)
    settings = ScaleSettings.of(parse_spec(yaml.safe_load(example)))
    assert settings == ScaleSettings(min=1, max=4, target=0.7, target_inflight=256,
                                     up_after=3, down_after=30)


def test_a_worker_that_cannot_be_started_again_is_retried_with_a_growing_back_off(
        tmp_path, log, monkeypatch):
    # (e.g. Ray cannot place it any more): the back-off grows, although the worker it replaces
    # had run long enough to count as stable
    from sluice.errors import DeployError
    from sluice.platform import supervisor

    failures: list[int] = []

    def delay(n: int) -> float:
        failures.append(n)
        return 0.0

    monkeypatch.setattr(supervisor, "STABLE_AFTER", 0.0)
    monkeypatch.setattr(supervisor, "restart_delay", delay)

    async def main() -> None:
        launch = FakeLaunch()
        workers = worker_set(log, launch)
        await workers.start()

        async def refuse(config: WorkerConfig, path: Path, on_line: OnLine) -> FakeWorker:
            raise DeployError("Ray cannot place worker 0")

        workers.launch = refuse  # type: ignore[assignment]
        dead = launch.started[0]
        dead.returncode = 1
        dead._exited.set()
        for _ in range(200):
            if len(failures) >= 4:
                break
            await asyncio.sleep(0)
        await workers.stop()

    asyncio.run(main())
    assert failures[:4] == [1, 2, 3, 4]
    assert any("trying to start it again" in m for m in logged(tmp_path))
