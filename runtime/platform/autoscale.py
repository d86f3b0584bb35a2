"""Autoscaling: an http or serving function's replicas between ``replicas.min`` and ``max``.

**Load.** Each worker of an autoscaled function reports, every :data:`LOAD_EVERY` seconds, how
busy its thread was and how many requests it held on average (``busy`` and ``inflight``, see
:mod:`sluice.worker.load`). One worker's load, in workers' worth of work, is
``max(busy, inflight / target_inflight)``: 1.0 is a worker fully taken (its thread busy all the
time, or ``target_inflight`` requests in flight on average); a sync handler's load is its busy
share, an async one's whichever is higher of its CPU share and its requests in flight. The
function's load is the sum over its workers.

**Policy** (:class:`ScalePolicy`, pure, the time passed in). Each sample recommends
``ceil(load / (target x workers per replica))`` replicas, bounded by min and max (a min of 0
counts as 1: functions do not scale to zero). It adds one replica once every sample over the
last ``scale_up_after`` seconds recommended more than run now, and removes one once every
sample over the last ``scale_down_after`` seconds recommended fewer: one step at a time, and
each step starts both windows over, so that the load spreads over the new count first. A
function outside its bounds (a redeploy moved them) steps to the bound at once.

**Platform-neutral.** :class:`Autoscaler` only adds workers to the function's
:class:`~sluice.platform.supervisor.WorkerSet` and removes them (drained as a stop drains
them), so it works the same wherever the launcher runs workers: processes here or Ray actors.
Kafka-only functions and jobs do not autoscale (a consumer group is bounded by its
partitions, and each rebalance pauses it).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sluice.spec import FunctionSpec, Kind
from sluice.worker.config import WorkerConfig

from . import metrics
from .base import AutoscaleStatus
from .logs import FunctionLog
from .supervisor import WorkerSet

LOAD_EVERY = 0.5  # seconds between a worker's load reports, and between the policy's samples


@dataclass(frozen=True)
class ScaleSettings:
    """A function's autoscaling settings, from its spec's ``replicas``."""

    min: int
    max: int
    target: float = 0.7  # the load each worker should carry (of 1)
    target_inflight: int = 256  # requests in flight that make one worker's worth
    up_after: float = 3.0  # seconds of samples asking for more before adding a replica
    down_after: float = 30.0  # ... asking for fewer before removing one
    workers: int = 1  # workers per replica

    @classmethod
    def of(cls, spec: FunctionSpec) -> ScaleSettings | None:
        """None when the function does not autoscale: max not above min, a job, or no HTTP
        trigger."""
        replicas, trigger = spec.replicas, spec.http_trigger
        low = max(1, replicas.min)
        if replicas.max is None or replicas.max <= low or spec.kind == Kind.JOB or (
                trigger is None):
            return None
        return cls(low, replicas.max, replicas.target,
                   replicas.target_inflight or trigger.max_inflight, replicas.scale_up_after,
                   replicas.scale_down_after, spec.workers)

    def worker_load(self, busy: float, inflight: float) -> float:
        """One worker's report in workers' worth of work."""
        return max(busy, inflight / self.target_inflight)

    def wanted(self, load: float) -> int:
        """The replicas that carry ``load`` at the target, within min and max."""
        need = math.ceil(round(load / (self.target * self.workers), 6))
        return max(self.min, min(self.max, need))


def initial_replicas(spec: FunctionSpec, running: int | None) -> int:
    """How many replicas a new generation starts with: when it autoscales, as many as run now
    (``running``), brought within its bounds, so that a redeploy under load keeps its
    capacity; else its minimum."""
    settings = ScaleSettings.of(spec)
    if settings is None or running is None:
        return max(1, spec.replicas.min)
    return max(settings.min, min(settings.max, running))


def scaled_replicas(spec: FunctionSpec, replicas: int | None, max_replicas: int | None
                    ) -> dict[str, Any]:
    """``sluice scale``'s new ``replicas`` settings: ``replicas`` sets the minimum (a maximum
    below it is raised to it: the replicas are then fixed there) and ``max_replicas`` the
    maximum; the target and windows stay."""
    data = spec.replicas.model_dump(mode="json", exclude_none=True)
    if replicas is not None:
        data["min"] = replicas
        if spec.replicas.max is not None:
            data["max"] = max(spec.replicas.max, replicas)
    if max_replicas is not None:
        data["max"] = max_replicas
    return data


@dataclass(frozen=True)
class Decision:
    """Run this many replicas, for this reason (said in the function's log)."""

    replicas: int
    reason: str


@dataclass
class _Streak:
    """Consecutive samples that asked for the same direction: since when, and their load."""

    since: float
    total: float = 0.0
    count: int = 0

    def add(self, load: float) -> _Streak:
        self.total += load
        self.count += 1
        return self


class ScalePolicy:
    """When to add or remove a replica, from load samples (see the module docstring).

    >>> policy = ScalePolicy(ScaleSettings(min=1, max=3, target=0.5, up_after=2))
    >>> [policy.observe(t, 1, 0.9) for t in (0.0, 1.0)]
    [None, None]
    >>> policy.observe(2.0, 1, 0.9)
    Decision(replicas=2, reason='load 0.9 workers over the last 2 s')
    """

    def __init__(self, settings: ScaleSettings) -> None:
        self.settings = settings
        self.desired: int | None = None  # the latest sample's recommendation
        self._up: _Streak | None = None
        self._down: _Streak | None = None

    def observe(self, now: float, replicas: int, load: float) -> Decision | None:
        """One sample: ``replicas`` run now and carry ``load``; a decision, or None."""
        settings = self.settings
        wanted = self.desired = settings.wanted(load)
        if replicas < settings.min:
            self.restart()
            return Decision(settings.min, f"below its minimum of {settings.min}")
        if replicas > settings.max:
            self.restart()
            return Decision(settings.max, f"above its maximum of {settings.max}")
        if wanted > replicas:
            self._down = None
            streak = self._up = (self._up or _Streak(now)).add(load)
            if now - streak.since >= settings.up_after:
                return self._step(replicas + 1, streak, now)
        elif wanted < replicas:
            self._up = None
            streak = self._down = (self._down or _Streak(now)).add(load)
            if now - streak.since >= settings.down_after:
                return self._step(replicas - 1, streak, now)
        else:
            self.restart()
        return None

    def _step(self, replicas: int, streak: _Streak, now: float) -> Decision:
        self.restart()
        return Decision(replicas, f"load {streak.total / streak.count:.1f} workers over the "
                                  f"last {round(now - streak.since, 1):g} s")

    def restart(self) -> None:
        """Forget the samples so far (after a step, or a step that failed)."""
        self._up = self._down = None


MakeConfigs = Callable[[int], list[WorkerConfig]]  # replicas -> every worker's config


class Autoscaler:
    """Samples a function's load every ``every`` seconds and adds or removes replicas of its
    :class:`WorkerSet` as its :class:`ScalePolicy` decides. ``make_configs(n)``: the configs of
    the generation's workers when it runs ``n`` replicas (worker ids from 0)."""

    def __init__(self, name: str, settings: ScaleSettings, workers: WorkerSet,
                 make_configs: MakeConfigs, log: FunctionLog,
                 clock: Callable[[], float] = time.monotonic, every: float = LOAD_EVERY) -> None:
        self.name = name
        self.settings = settings
        self.policy = ScalePolicy(settings)
        self.workers = workers
        self.make_configs = make_configs
        self.log = log
        self.clock = clock
        self.every = every
        self._task: asyncio.Task[None] | None = None

    @property
    def replicas(self) -> int:
        """Replicas running now (members of the set; ones starting are not yet)."""
        return len(self.workers.configs) // self.settings.workers

    def load(self) -> float:
        """Workers' worth of work now: the sum of the members' latest reports."""
        return sum(self.settings.worker_load(busy, inflight)
                   for busy, inflight in self.workers.loads.values())

    def status(self) -> AutoscaleStatus:
        return AutoscaleStatus(self.settings.min, self.settings.max, self.settings.target,
                               round(self.load(), 2))

    @property
    def desired(self) -> int:
        return self.policy.desired if self.policy.desired is not None else self.replicas

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """No more decisions; a scale-up in progress is abandoned (its new workers stopped);
        drains in progress go on (the set's own stop stops them too)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while not self.workers.stopping:
            await asyncio.sleep(self.every)
            try:
                await self.tick()
            except Exception as exc:  # a bug here must not end autoscaling unseen
                self.log.event("error", f"autoscaler: {type(exc).__name__}: {exc}")

    async def tick(self) -> Decision | None:
        """One sample, and the step it decides (a scale-up returns once the new workers
        serve; a scale-down once they are out, their drain going on)."""
        decision = self.policy.observe(self.clock(), self.replicas, self.load())
        if decision is not None and not self.workers.stopping:
            await self._scale(decision)
        return decision

    async def _scale(self, decision: Decision) -> None:
        current, wanted = self.replicas, decision.replicas
        self.log.event("info", f"scaling {self.name} {current} -> {wanted}: {decision.reason}",
                       replicas=wanted)
        metrics.SCALINGS.labels(self.name, "up" if wanted > current else "down").inc()
        members = {c.worker_id for c in self.workers.configs}
        if wanted < current:
            self.workers.remove(set(sorted(members)[wanted * self.settings.workers:]))
            return
        joining = [c for c in self.make_configs(wanted) if c.worker_id not in members]
        started = self.clock()
        try:
            await self.workers.add(joining)
        except Exception as exc:  # DeployError, or the launcher's: try again after a window
            self.policy.restart()
            self.log.event("error", f"could not scale {self.name} to {wanted} replicas: {exc}")
            return
        self.log.event("info", f"{self.name} runs {wanted} replicas (the new workers were "
                       f"ready in {self.clock() - started:.2f}s)", replicas=wanted)


def start_autoscaler(spec: FunctionSpec, workers: WorkerSet, make_configs: MakeConfigs,
                     log: FunctionLog) -> Autoscaler | None:
    """An autoscaler running for this generation's workers, if the function autoscales."""
    settings = ScaleSettings.of(spec)
    if settings is None:
        return None
    autoscaler = Autoscaler(spec.name, settings, workers, make_configs, log)
    autoscaler.start()
    return autoscaler
