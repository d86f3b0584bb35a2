"""``sluice run / runs / schedule``: start job runs, follow them, list and cancel them, pause
and resume cron schedules."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from .cli import _table, _when
from .errors import SpecError
from .params import parse_param_option

RUN_ACTIONS = ("show", "cancel", "logs")


def add_commands(sub: Any) -> None:
    run = sub.add_parser("run", help="start a run of a job function and follow it")
    run.add_argument("name")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="a run param (repeatable); the value is read as JSON if it parses")
    run.add_argument("--params", metavar="JSON|@FILE", help="all params as a JSON object")
    run.add_argument("-d", "--detach", action="store_true",
                     help="print the run id and return at once")
    run.add_argument("-o", "--output", choices=["table", "json"], default="table")

    runs = sub.add_parser(
        "runs", help="list runs; `runs show|cancel|logs RUN_ID` for one",
        description="sluice runs [FUNCTION]  |  sluice runs show RUN_ID  |  "
                    "sluice runs cancel RUN_ID  |  sluice runs logs RUN_ID [-f]")
    runs.add_argument("target", nargs="*", metavar="FUNCTION | ACTION RUN_ID")
    runs.add_argument("--status", help="only runs with this status (e.g. failed)")
    runs.add_argument("--limit", type=int, default=20, help="how many, newest first")
    runs.add_argument("-f", "--follow", action="store_true", help="logs: until the run ends")
    runs.add_argument("-o", "--output", choices=["table", "json"], default="table")

    schedule = sub.add_parser("schedule", help="list, pause or resume cron schedules")
    schedule.add_argument("action", choices=["list", "pause", "resume"])
    schedule.add_argument("name", nargs="?", help="the function (pause, resume)")
    schedule.add_argument("--trigger", help="one cron trigger of the function (default: all)")
    schedule.add_argument("-o", "--output", choices=["table", "json"], default="table")


# -- rendering (pure) ------------------------------------------------------------------------
def progress_bar(step: float, total: float | None, message: str = "", width: int = 30) -> str:
    """``[#######.......]  7/30  23%  loss 0.41``; a counter when the total is unknown.

    >>> progress_bar(3, 10, "epoch 3", width=10)
    '[###.......] 3/10  30%  epoch 3'
    >>> progress_bar(42, None)
    '42 done'
    """
    if not total:
        return f"{step:g} done" + (f"  {message}" if message else "")
    share = max(0.0, min(1.0, step / total))
    filled = int(round(share * width))
    bar = "#" * filled + "." * (width - filled)
    return f"[{bar}] {step:g}/{total:g}  {share * 100:.0f}%" + (f"  {message}" if message else "")


def format_line(entry: dict[str, Any]) -> str:
    """A log line for a person: ``12:00:01.250 info   message  key=value``."""
    when = str(entry.get("time", ""))[11:23]
    fields = {k: v for k, v in entry.items() if k not in (
        "time", "level", "function", "worker", "message", "run", "with", "stream")}
    fields.update(entry.get("with") or {})
    extra = "  ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                      for k, v in fields.items())
    line = f"{when} {entry.get('level', 'info'):<5}  {entry.get('message', '')}"
    return line + (f"  {extra}" if extra else "")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def runs_table(runs: list[dict[str, Any]]) -> str:
    rows = [["RUN ID", "FUNCTION", "TRIGGER", "STATUS", "STARTED", "DURATION", "ATTEMPT"]]
    for run in runs:
        trigger = run["trigger"] + (f"/{run['trigger_name']}" if run.get("trigger_name") else "")
        rows.append([run["id"], run["function"], trigger, run["status"],
                     _when(run.get("started") or run["created"]), _duration(run.get("duration")),
                     f"{run['attempt']}/{run['max_attempts']}"])
    return _table(rows)


def run_details(run: dict[str, Any]) -> str:
    lines = [f"run        {run['id']}",
             f"function   {run['function']} (generation {run['generation']}"
             + (f", version {run['version']})" if run.get("version") else ")"),
             f"trigger    {run['trigger']}"
             + (f"/{run['trigger_name']}" if run.get("trigger_name") else "")
             + (f"  (fire of {_when(run['scheduled'])})" if run.get("scheduled") else ""),
             f"status     {run['status']}" + (f": {run['reason']}" if run.get("reason") else ""),
             f"attempt    {run['attempt']} of {run['max_attempts']}"
             + (f" (exit code {run['exit_code']})" if run.get("exit_code") is not None else ""),
             f"created    {_when(run['created'])}",
             f"started    {_when(run.get('started'))}",
             f"ended      {_when(run.get('ended'))}",
             f"duration   {_duration(run.get('duration'))}",
             f"params     {json.dumps(run['params'])}"]
    outputs = run.get("outputs") or {}
    for name, value in (outputs.get("metrics") or {}).items():
        lines.append(f"metric     {name} = {value}")
    for name, uri in (outputs.get("artifacts") or {}).items():
        lines.append(f"artifact   {name}: {uri}")
    if "result" in outputs:
        lines.append(f"result     {json.dumps(outputs['result'])}")
    return "\n".join(lines)


class Follower:
    """Prints a run's lines as they come; progress lines become one redrawn bar on a
    terminal, and plain lines elsewhere."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err
        self.tty = err.isatty()
        self._bar = ""

    def line(self, raw: bytes) -> None:
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = {"message": raw.decode("utf-8", "replace").rstrip()}
        progress = entry.get("progress") if isinstance(entry, dict) else None
        if isinstance(progress, dict) and isinstance(progress.get("step"), int | float):
            bar = progress_bar(progress["step"], progress.get("total"),
                               str(progress.get("message") or ""))
            if self.tty:
                self.err.write("\r\033[K" + bar)
                self.err.flush()
                self._bar = bar
            else:
                print(bar, file=self.err, flush=True)
            return
        self.clear()
        print(format_line(entry) if isinstance(entry, dict) else raw.decode(), file=self.out,
              flush=True)
        if self._bar:  # keep the bar below the newest line
            self.err.write(self._bar)
            self.err.flush()

    def clear(self) -> None:
        if self.tty and self._bar:
            self.err.write("\r\033[K")
            self.err.flush()

    def done(self) -> None:
        if self.tty and self._bar:
            self.err.write("\n")
            self.err.flush()
            self._bar = ""


# -- commands --------------------------------------------------------------------------------
def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.params:
        text = Path(args.params[1:]).read_text() if args.params.startswith("@") else args.params
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise SpecError(f"--params: not valid JSON ({exc}); e.g. --params '{{\"epochs\": 5}}'"
                            ) from None
        if not isinstance(loaded, dict):
            raise SpecError("--params: must be a JSON object, e.g. '{\"epochs\": 5}'")
        params.update(loaded)
    for item in args.param:
        try:
            name, value = parse_param_option(item)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        params[name] = value
    return params


def cmd_run(args: argparse.Namespace, client: Any) -> int:
    run = client.run(args.name, _params(args), trigger="manual")
    if args.detach:
        print(json.dumps(run, indent=2) if args.output == "json" else run["id"])
        return 0
    print(f"run {run['id']} started; following its logs (Ctrl-C detaches, the run goes on)",
          file=sys.stderr, flush=True)
    follower = Follower(sys.stdout, sys.stderr)
    try:
        for raw in client.run_logs(run["id"], follow=True):
            if args.output == "json":
                sys.stdout.buffer.write(raw)
                sys.stdout.flush()
            else:
                follower.line(raw)
    except KeyboardInterrupt:
        follower.done()
        print(f"\ndetached from {run['id']}; it goes on. `sluice runs show {run['id']}` or "
              f"`sluice runs cancel {run['id']}`", file=sys.stderr)
        return 130
    follower.done()
    final = client.get_run(run["id"])  # recorded before its log closed, which ended the stream
    if args.output == "json":
        print(json.dumps(final))
    else:
        print(run_details(final))
    return 0 if final["status"] == "succeeded" else 1


def cmd_runs(args: argparse.Namespace, client: Any) -> int:
    target = list(args.target)
    if target and target[0] in RUN_ACTIONS:
        if len(target) != 2:
            raise SpecError(f"usage: sluice runs {target[0]} RUN_ID")
        action, run_id = target
        if action == "cancel":
            run = client.cancel_run(run_id)
            print(json.dumps(run, indent=2) if args.output == "json" else
                  f"{run_id} {run['status']}: {run['reason']}")
            return 0
        if action == "logs":
            follower = Follower(sys.stdout, sys.stderr)
            for raw in client.run_logs(run_id, follow=args.follow):
                follower.line(raw)
            follower.done()
            return 0
        run = client.get_run(run_id)
        if args.output == "json":
            print(json.dumps(run, indent=2))
            return 0
        print(run_details(run))
        lines = list(client.run_logs(run_id, tail=50))
        if lines:
            print("\nlogs (last 50 lines; all: sluice runs logs " + run_id + ")")
            follower = Follower(sys.stdout, sys.stderr)
            for raw in lines:
                follower.line(raw)
            follower.done()
        return 0
    if len(target) > 1:
        raise SpecError("usage: sluice runs [FUNCTION] (or: sluice runs show|cancel|logs RUN_ID)")
    runs = client.runs(target[0] if target else None, args.status, args.limit)
    if args.output == "json":
        print(json.dumps(runs, indent=2))
    else:
        print(runs_table(runs) if runs else "No runs yet. Start one: sluice run FUNCTION")
    return 0


def cmd_schedule(args: argparse.Namespace, client: Any) -> int:
    if args.action == "list":
        items = client.schedules()
        if args.output == "json":
            print(json.dumps(items, indent=2))
        elif not items:
            print("No cron schedules. Add a cron trigger, e.g. "
                  "--trigger cron:schedule=\"0 */6 * * *\"")
        else:
            rows = [["FUNCTION", "TRIGGER", "SCHEDULE", "TIMEZONE", "POLICY", "STATE",
                     "LAST FIRE", "NEXT FIRE"]]
            for s in items:
                rows.append([s["function"], s["trigger"], s["schedule"], s["timezone"],
                             s["concurrency_policy"], "paused" if s["paused"] else "active",
                             _when(s["last_fire"]), _when(s["next_fire"])])
            print(_table(rows))
        return 0
    if not args.name:
        raise SpecError(f"usage: sluice schedule {args.action} FUNCTION [--trigger NAME]")
    switch = client.pause if args.action == "pause" else client.resume
    result = switch(args.name, args.trigger)
    print(f"{args.name}: {', '.join(result['triggers'])} "
          f"{'paused' if result['paused'] else 'resumed'}")
    return 0
