"""``sluice pipeline deploy FILE`` and ``sluice pipeline status [FILE]``.

Deploy creates the topics, deploys the jobs, starts the setup runs that have not succeeded
yet (following their progress), then deploys the other functions; each step says what it
did, and a second deploy of the same file changes nothing. Status shows every function's
state, with a job's last run, a Kafka function's consumer lag and a serving function's model
version.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import httpx

from .errors import ApiError, PlatformError, SpecError
from .pipeline import PipelineSpec, load_pipeline
from .spec import FunctionSpec, parse_spec

DEFAULT_FILE = "functions/pipeline.yaml"


def add_commands(sub: Any) -> None:
    pipeline = sub.add_parser("pipeline", help="deploy a pipeline file, or show its state")
    actions = pipeline.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)
    deploy = actions.add_parser("deploy", help="create its topics, deploy its functions, run "
                                "its setup jobs (idempotent)")
    deploy.add_argument("file", nargs="?", default=DEFAULT_FILE,
                        help=f"the pipeline file (default {DEFAULT_FILE})")
    deploy.add_argument("--no-setup", action="store_true", help="skip the setup runs")
    status = actions.add_parser("status", help="each function's state, lag, last run and "
                                "model version")
    status.add_argument("file", nargs="?", default=DEFAULT_FILE,
                        help=f"the pipeline file (default {DEFAULT_FILE})")
    for parser in (deploy, status):
        parser.add_argument("-o", "--output", choices=["text", "json"], default="text")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- deploy ---------------------------------------------------------------------------------------

def create_topics(pipeline: PipelineSpec, kafka: dict[str, Any]) -> dict[str, str]:
    """Create the pipeline's topics that are missing; what happened to each."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    if not pipeline.topics:
        return {}
    admin = KafkaAdminClient(**kafka)
    done: dict[str, str] = {}
    try:
        existing = set(admin.list_topics())
        for name, topic in pipeline.topics.items():
            if name in existing:
                done[name] = "exists"
                continue
            try:
                admin.create_topics([NewTopic(name, topic.partitions, 1)])
                done[name] = f"created ({topic.partitions} partitions)"
            except TopicAlreadyExistsError:
                done[name] = "exists"
    except KafkaError as exc:
        raise PlatformError(f"creating the pipeline's topics failed: {exc}") from exc
    finally:
        admin.close()
    return done


def unchanged(client: Any, spec: FunctionSpec) -> bool:
    """The function runs now with this very spec (so deploying it again would only restart
    it)."""
    from .platform.deployed import with_default_trigger

    try:
        current = client.get(spec.name)
    except ApiError as exc:
        if exc.status == 404:  # not deployed yet
            return False
        raise
    if current["status"]["state"] not in ("ready", "degraded"):
        return False
    try:
        deployed = parse_spec(current["spec"])
    except SpecError:  # deployed by an older sluice, say: deploy it again
        return False
    return deployed == with_default_trigger(spec)


def deploy_function(client: Any, spec: FunctionSpec) -> str:
    if unchanged(client, spec):
        return "unchanged"
    started = time.monotonic()
    result = client.deploy(spec.model_dump(mode="json", exclude_none=True))
    status = result["status"]
    where = f" at {status['endpoint']}" if status.get("endpoint") else ""
    return f"{status['state']} in {time.monotonic() - started:.1f}s{where}"


def follow_run(client: Any, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Start a run, show its logs and progress on stderr, and return the finished run;
    PlatformError if it did not succeed."""
    from .runs_cli import Follower

    run = client.run(name, params, trigger="manual")
    say(f"  run {run['id']} of {name} started; its progress:")
    follower = Follower(sys.stderr, sys.stderr)
    for raw in client.run_logs(run["id"], follow=True):
        follower.line(raw)
    follower.done()
    final: dict[str, Any] = client.get_run(run["id"])
    if final["status"] != "succeeded":
        raise PlatformError(f"run {run['id']} of {name} {final['status']}: "
                            f"{final.get('reason') or 'see sluice runs show ' + run['id']}")
    return final


def setup_run(client: Any, name: str, params: dict[str, Any]) -> str:
    """Start the run unless the job has succeeded before; follow it to its end."""
    if client.runs(name, status="succeeded", limit=1):
        return "done before (skipped)"
    final = follow_run(client, name, params)
    return f"succeeded in {final['ended'] - final['started']:.1f}s ({final['id']})"


def cmd_deploy(args: argparse.Namespace, client: Any, kafka: Any) -> int:
    pipeline = load_pipeline(args.file)
    specs = pipeline.specs()
    report: dict[str, Any] = {"pipeline": pipeline.name, "topics": {}, "functions": {},
                              "setup": {}}
    say(f"Deploying pipeline {pipeline.name} from {args.file}")
    if pipeline.topics:
        report["topics"] = create_topics(pipeline, kafka())
        for name, what in report["topics"].items():
            say(f"  topic {name}: {what}")
    first, rest = pipeline.order()
    for name in first:
        report["functions"][name] = deploy_function(client, specs[name])
        say(f"  {name} ({specs[name].kind}): {report['functions'][name]}")
    if not args.no_setup:
        for step in pipeline.setup:
            say(f"  setup: {step.run} ...")
            report["setup"][step.run] = setup_run(client, step.run, step.params)
            say(f"  setup: {step.run}: {report['setup'][step.run]}")
    for name in rest:
        report["functions"][name] = deploy_function(client, specs[name])
        say(f"  {name} ({specs[name].kind}): {report['functions'][name]}")
    if args.output == "json":
        print(json.dumps(report, indent=2))
    else:
        print(f"pipeline {pipeline.name}: {len(specs)} functions deployed; see "
              f"`sluice pipeline status {args.file}`")
    return 0


# -- status ---------------------------------------------------------------------------------------

def function_status(client: Any, name: str, spec: FunctionSpec) -> dict[str, Any]:
    """One function's row: state, and what matters for its kind."""
    try:
        current = client.get(name)
    except ApiError as exc:
        if exc.status != 404:
            raise
        return {"name": name, "kind": str(spec.kind), "state": "not deployed"}
    status = current["status"]
    row: dict[str, Any] = {"name": name, "kind": status["kind"], "state": status["state"],
                           "endpoint": status.get("endpoint")}
    if status["kind"] != "job":  # a job's processes are its runs
        row["workers"] = f"{status['workers_ready']}/{status['workers']}"
    if status.get("lag"):
        known = [lag for lag in status["lag"].values() if lag >= 0]
        row["lag"] = sum(known) if len(known) == len(status["lag"]) else None
    if status["kind"] == "job":
        runs = client.runs(name, limit=1)
        if runs:
            last = runs[0]
            row["last_run"] = {"id": last["id"], "status": last["status"],
                               "trigger": last["trigger"], "ended": last.get("ended"),
                               "result": (last.get("outputs") or {}).get("result")}
    if spec.serving is not None and status.get("endpoint"):
        row["model"] = served_model(status["endpoint"], spec.serving.model)
    return row


def served_model(endpoint: str, ref: str) -> str | None:
    """``name:version`` as the serving function reports it over V2 (None if it does not
    answer)."""
    name = ref.split("@")[0].split(":")[0]
    try:
        answer = httpx.get(f"{endpoint}/v2/models/{name}", timeout=3.0)
        versions = answer.json().get("versions") or []
    except (httpx.HTTPError, ValueError):
        return None
    return f"{name}:{versions[-1]}" if versions else None


def _ago(ts: float | None) -> str:
    if not ts:
        return ""
    seconds = max(0.0, time.time() - ts)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    return f"{seconds / 60:.0f}m ago" if seconds < 7200 else f"{seconds / 3600:.1f}h ago"


def format_row(row: dict[str, Any]) -> str:
    parts = [f"{row['name']:<10} {row['kind']:<8} {row['state']:<12} {row.get('workers', ''):<5}"]
    if "lag" in row:
        parts.append(f"lag {row['lag'] if row['lag'] is not None else 'unknown'}")
    if row.get("model"):
        parts.append(f"serving {row['model']}")
    last = row.get("last_run")
    if last:
        parts.append(f"last run {last['status']} ({last['trigger']}, {_ago(last['ended'])})")
        result = last.get("result")
        if isinstance(result, dict) and "model" in result:
            parts.append(f"-> {result['model']} AUC {result.get('auc')}"
                         + (" promoted" if result.get("promoted") else " not promoted"))
    elif row["kind"] == "job" and row["state"] != "not deployed":
        parts.append("no runs yet")
    return "  ".join(parts)


def cmd_status(args: argparse.Namespace, client: Any) -> int:
    pipeline = load_pipeline(args.file)
    rows = [function_status(client, name, spec) for name, spec in pipeline.specs().items()]
    if args.output == "json":
        print(json.dumps({"pipeline": pipeline.name, "functions": rows}, indent=2))
        return 0
    print(f"pipeline {pipeline.name}")
    for row in rows:
        print("  " + format_row(row))
    return 0


def cmd_pipeline(args: argparse.Namespace, client: Any, kafka: Any) -> int:
    if args.pipeline_command == "deploy":
        return cmd_deploy(args, client, kafka)
    return cmd_status(args, client)
