"""Job functions as Kubernetes CronJobs (the default; ``--jobs nuclio`` renders them as
NuclioFunctions instead).

Why CronJobs: a sluice job runs to completion, one process per attempt, with params, retries,
a per-attempt timeout and a concurrency policy, and a Kubernetes Job is exactly that (Nuclio
has no run-to-completion: its cron trigger calls a handler inside an always-running function,
with the event timeout as its only bound). The mapping:

- each cron trigger: a CronJob ``<function>-<trigger>``; ``schedule`` (``@hourly``-style names
  expanded, ``@every``/``interval`` turned into a cron step where one exists), ``timeZone``,
  ``concurrencyPolicy`` (allow/forbid/replace, the same words); a fire the controller missed
  (``startingDeadlineSeconds``) starts late only by up to 60 s with ``catch_up: skip`` (less if
  ``starting_deadline`` says so), and with ``once`` the latest missed fire runs if it is within
  ``starting_deadline`` (unbounded unless given), as the local scheduler decides;
- every job, for its runs on demand (``sluice run``; a pipeline's setup runs): a suspended
  CronJob ``<function>`` with the spec's default params, a template that never fires by
  itself: ``kubectl create job --from=cronjob/NAME NAME-1`` starts a run;
- an attempt: a pod (``restartPolicy: Never``) whose ``activeDeadlineSeconds`` is the spec's
  ``timeout``, with ``terminationGracePeriodSeconds`` its ``termination_grace``; ``retries``
  is the Job's ``backoffLimit`` (Kubernetes' own back-off, from 10 s doubling, stands for
  ``retry_backoff``);
- the run's params: the spec's defaults merged with the trigger's (as the platform merges
  them), baked into ``jobs/<trigger>.json`` in the image, which the container's argument picks.
"""

from __future__ import annotations

import math
import re
from typing import Any

from sluice.errors import SpecError
from sluice.params import check_params
from sluice.schedule import CronSchedule
from sluice.spec import CronTrigger, FunctionSpec, cron_params

from .containers import FUNCTION_DIR, function_container, job_config_path
from .options import RenderOptions

MAX_CRONJOB_NAME = 52  # Kubernetes appends an 11-character suffix to the Jobs it makes
ON_DEMAND_SCHEDULE = "0 0 1 1 *"  # never used: the CronJob is suspended
SKIP_DEADLINE = 60  # seconds; the CronJob controller looks every 10 s


def kubernetes_schedule(trigger: CronTrigger) -> tuple[str, str]:
    """(schedule, timeZone) for a CronJob; SpecError when Kubernetes cannot express it.

    >>> kubernetes_schedule(CronTrigger(interval="15m"))
    ('*/15 * * * *', 'UTC')
    >>> kubernetes_schedule(CronTrigger(schedule="@daily", timezone="Europe/Paris"))
    ('0 0 * * *', 'Europe/Paris')
    """
    parsed = CronSchedule.parse(trigger.schedule, trigger.interval, trigger.timezone)
    if parsed.expression is not None:
        return parsed.expression, trigger.timezone
    seconds = parsed.interval or 0.0
    minutes = int(seconds // 60)
    # intervals are aligned to the epoch, as cron steps are in UTC
    if seconds == minutes * 60 and minutes >= 1:
        if minutes < 60 and 60 % minutes == 0:
            return ("* * * * *" if minutes == 1 else f"*/{minutes} * * * *"), "UTC"
        hours = minutes // 60
        if minutes % 60 == 0 and hours < 24 and 24 % hours == 0:
            return ("0 * * * *" if hours == 1 else f"0 */{hours} * * *"), "UTC"
        if minutes == 24 * 60:
            return "0 0 * * *", "UTC"
    raise SpecError(f"interval {trigger.interval or trigger.schedule!r}: a Kubernetes CronJob "
                    "fires on whole minutes of a cron expression; use an interval that divides "
                    "an hour or a day (e.g. '@every 15m', '@every 6h') or a cron schedule")


def cronjob_name(function: str, trigger: str | None) -> str:
    if trigger is None:
        return function
    name = f"{function}-{re.sub(r'[^a-z0-9-]+', '-', trigger.lower())}".strip("-")
    if len(name) > MAX_CRONJOB_NAME:
        raise SpecError(f"triggers.{trigger}: the CronJob {name!r} would be {len(name)} "
                        f"characters; Kubernetes allows {MAX_CRONJOB_NAME}: shorten the "
                        "function's or the trigger's name")
    return name


def job_runs(spec: FunctionSpec) -> dict[str | None, dict[str, Any]]:
    """Each CronJob's run: its params and trigger, by cron trigger name (None: on demand)."""
    runs: dict[str | None, dict[str, Any]] = {
        None: {"params": check_params(spec.params, {}), "trigger": "manual"}}
    for name, trigger in spec.cron_triggers.items():
        runs[name] = {"params": check_params(spec.params, cron_params(trigger),
                                             f"triggers.{name}.params"), "trigger": "cron"}
    return runs


def cron_jobs(spec: FunctionSpec, options: RenderOptions) -> list[dict[str, Any]]:
    """A suspended CronJob for runs on demand, and one CronJob per cron trigger."""
    out = []
    triggers: dict[str | None, CronTrigger | None] = {None: None, **spec.cron_triggers}
    for name, trigger in triggers.items():
        container = function_container(spec, options, name=spec.name,
                                       args=[job_config_path(name)],
                                       extra_env={"SLUICE_GPUS": str(spec.resources.gpu)})
        container["workingDir"] = FUNCTION_DIR
        # each run's id is its pod's name (the config file's is the same for every run)
        container.setdefault("env", []).append(
            {"name": "SLUICE_RUN_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
        pod = {"restartPolicy": "Never", "activeDeadlineSeconds": math.ceil(spec.timeout),
               "terminationGracePeriodSeconds": math.ceil(spec.termination_grace),
               "containers": [container]}
        labels = dict(spec.labels)
        cron: dict[str, Any] = {}
        if trigger is None:
            cron.update(schedule=ON_DEMAND_SCHEDULE, suspend=True)
        else:
            schedule, zone = kubernetes_schedule(trigger)
            cron.update(schedule=schedule, timeZone=zone,
                        concurrencyPolicy=trigger.concurrency_policy.capitalize())
            deadline = trigger.starting_deadline
            if trigger.catch_up == "skip":
                deadline = min(deadline, SKIP_DEADLINE) if deadline else SKIP_DEADLINE
            if deadline:
                cron["startingDeadlineSeconds"] = math.ceil(deadline)
        cron["jobTemplate"] = {"metadata": {"labels": labels},
                               "spec": {"backoffLimit": spec.retries,
                                        "template": {"metadata": {"labels": labels},
                                                     "spec": pod}}}
        metadata: dict[str, Any] = {"name": cronjob_name(spec.name, name), "labels": labels}
        if trigger is None:
            metadata["annotations"] = {"sluice.io/on-demand": "true"}
        if options.namespace:
            metadata["namespace"] = options.namespace
        out.append({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": metadata,
                    "spec": cron})
    return out
