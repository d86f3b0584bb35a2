"""The pure core of job runs: params, concurrency policy, run states, records, CLI rendering."""

from __future__ import annotations

import doctest
import time

import pytest

import sluice.params
import sluice.runs_cli
import sluice.schedule
from sluice.errors import SpecError
from sluice.packaging import parse_trigger_option
from sluice.params import check_params, parse_param_option
from sluice.platform.states import RUN_ALLOWED, RunState, can_move_run
from sluice.platform.store import RunRecord, Store
from sluice.runs_cli import format_line, progress_bar
from sluice.schedule import cron_action
from sluice.spec import parse_spec


@pytest.mark.parametrize("module", [sluice.params, sluice.runs_cli, sluice.schedule])
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize(("declared", "given", "expected"), [
    ({}, {"anything": [1, 2]}, {"anything": [1, 2]}),       # no declaration: any mapping
    ({"epochs": 10, "lr": 0.1}, {}, {"epochs": 10, "lr": 0.1}),
    ({"epochs": 10, "lr": 0.1}, {"lr": 1}, {"epochs": 10, "lr": 1}),  # an int where a float is
    ({"tag": None}, {"tag": {"a": 1}}, {"tag": {"a": 1}}),   # a None default takes anything
    ({"on": False}, {"on": True}, {"on": True}),
    ({}, None, {}),
])
def test_params_merge_over_the_defaults(declared, given, expected):
    assert check_params(declared, given) == expected


@pytest.mark.parametrize(("declared", "given", "message"), [
    ({"epochs": 10}, {"epochs": "ten"},
     'params.epochs: must be a whole number such as 5 like its default 10 (got "ten")'),
    ({"epochs": 10}, {"epochs": 2.5}, "params.epochs: must be a whole number"),
    ({"epochs": 10}, {"epochs": True}, "params.epochs: must be a whole number"),  # bool is no int
    ({"lr": 0.1}, {"lr": "fast"}, "params.lr: must be a number such as 0.01"),
    ({"epochs": 10}, {"epoch": 1}, "params.epoch: not a param of this job (its params: epochs)"),
    ({}, [1, 2], "params: must be a mapping of name to value"),
    ({}, {"bad name": 1}, "params.bad name: a param name is letters"),
])
def test_bad_params_name_the_field_and_what_fits(declared, given, message):
    with pytest.raises(ValueError) as info:
        check_params(declared, given)
    assert message in str(info.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("epochs=5", ("epochs", 5)), ("lr=0.5", ("lr", 0.5)), ("name=fraud", ("name", "fraud")),
    ("flag=true", ("flag", True)), ("ids=[1,2]", ("ids", [1, 2])), ("empty=", ("empty", "")),
])
def test_param_options(text, expected):
    assert parse_param_option(text) == expected


@pytest.mark.parametrize("text", ["epochs", "=5", "bad name=1"])
def test_bad_param_options(text):
    with pytest.raises(ValueError, match="must be NAME=VALUE"):
        parse_param_option(text)


@pytest.mark.parametrize(("policy", "busy", "action"), [
    ("allow", False, "fire"), ("allow", True, "fire"), ("forbid", False, "fire"),
    ("forbid", True, "skip"), ("replace", False, "fire"), ("replace", True, "replace"),
])
def test_concurrency_policy(policy, busy, action):
    assert cron_action(policy, busy) == action


def test_run_states_end_in_final_states():
    assert set(RUN_ALLOWED) == set(RunState)
    finals = {s for s in RunState if s.finished}
    assert finals == {RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT,
                      RunState.CANCELLED, RunState.SKIPPED}
    assert can_move_run(RunState.RUNNING, RunState.PENDING)  # waiting to retry
    assert not can_move_run(RunState.SUCCEEDED, RunState.RUNNING)
    assert not can_move_run(RunState.PENDING, RunState.SUCCEEDED)  # it must have run


def test_run_records_round_trip_through_sqlite(tmp_path):
    store = Store(tmp_path / "state.db")
    now = time.time()
    first = RunRecord("train-1", "train", 2, "v1", "cron", "nightly", {"epochs": 3},
                      RunState.RUNNING, now - 10, started=now - 9, attempt=1, max_attempts=3,
                      pid=1234, scheduled=now - 10)
    second = RunRecord("train-2", "train", 2, None, "manual", None, {}, RunState.SUCCEEDED,
                       now, started=now, ended=now + 1, outputs={"metrics": {"auc": 0.9}})
    other = RunRecord("etl-1", "etl", 1, None, "api", None, {}, RunState.FAILED, now + 1)
    for run in (first, second, other):
        store.put_run(run)
    assert store.get_run("train-1") == first
    assert [r.id for r in store.runs("train")] == ["train-2", "train-1"]  # newest first
    assert [r.id for r in store.runs(status=RunState.FAILED)] == ["etl-1"]
    assert [r.id for r in store.unfinished_runs()] == ["train-1"]
    assert second.to_json()["duration"] == pytest.approx(1.0)
    store.close()


def test_paused_schedules_are_kept_per_trigger(tmp_path):
    store = Store(tmp_path / "state.db")
    store.set_paused("train", "nightly", True)
    store.set_paused("train", "hourly", True)
    store.set_paused("train", "hourly", False)
    assert store.paused("train") == {"nightly"}
    store.delete("train")
    assert store.paused("train") == set()


@pytest.mark.parametrize(("step", "total", "expected"), [
    (0, 4, "[....] 0/4  0%"), (2, 4, "[##..] 2/4  50%"), (9, 4, "[####] 9/4  100%"),
    (7, None, "7 done"),
])
def test_progress_bar(step, total, expected):
    assert progress_bar(step, total, width=4) == expected


def test_log_lines_read_well():
    line = format_line({"time": "2026-01-01T12:00:01.250+00:00", "level": "warn",
                        "message": "slow", "run": "r1", "with": {"epoch": 3}})
    assert line == "12:00:01.250 warn   slow  epoch=3"


def test_cron_trigger_option_keeps_commas_inside_the_schedule():
    name, trigger = parse_trigger_option("cron:schedule=0 6,18 * * *,timezone=Europe/Paris")
    assert trigger == {"kind": "cron", "schedule": "0 6,18 * * *", "timezone": "Europe/Paris"}
    _, quoted = parse_trigger_option('cron:schedule="0 */6 * * *"')
    assert quoted["schedule"] == "0 */6 * * *"
    _, interval = parse_trigger_option("cron:interval=30s")
    assert interval["interval"] == "30s"


def test_job_spec_rules():
    job = parse_spec({"name": "train", "kind": "job", "params": {"epochs": 10}, "triggers": {
        "nightly": {"kind": "cron", "schedule": "0 2 * * *", "concurrency_policy": "replace",
                    "params": {"epochs": 20}}}})
    assert job.timeout == 3600.0  # a job gets an hour unless it says otherwise
    assert parse_spec({"name": "web"}).timeout == 60.0
    assert parse_spec({"name": "train", "kind": "job", "timeout": 5}).timeout == 5
    assert job.cron_triggers["nightly"].params == {"epochs": 20}


@pytest.mark.parametrize(("spec", "message"), [
    ({"kind": "job", "triggers": {"web": {"kind": "http"}}},
     "triggers.web: a job function runs on demand (`sluice run`) or on a cron trigger"),
    ({"triggers": {"web": {"kind": "http"}, "c": {"kind": "cron", "interval": "1s",
                                                   "concurrency_policy": "replace"}}},
     "triggers.c.concurrency_policy: 'replace' stops the running fire"),
    ({"triggers": {"c": {"kind": "cron", "interval": "1s", "params": {"a": 1}}}},
     "triggers.c.params: params are for job functions"),
    ({"kind": "job", "params": {"epochs": 10},
      "triggers": {"c": {"kind": "cron", "interval": "1s", "params": {"epochs": "x"}}}},
     "triggers.c.params.epochs: must be a whole number such as 5 like its default 10"),
    ({"kind": "job", "retry_backoff": -1}, "retry_backoff: Input should be greater than"),
])
def test_job_spec_errors_name_the_field(spec, message):
    with pytest.raises(SpecError) as info:
        parse_spec({"name": "f", **spec})
    assert message in str(info.value)
