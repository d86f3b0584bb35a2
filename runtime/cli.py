"""The ``sluice`` command line: verbs like nuctl and kubectl.

Errors go to stderr as one line with a hint and exit code 1 (2 for usage errors). Imports stay
light: only ``sluice up`` loads the platform.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .client import Client
from .errors import SluiceError
from .settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice", description="Serverless functions for ML pipelines: deploy, invoke, watch.")
    parser.add_argument("--home", help="state directory (default $SLUICE_HOME or ~/.sluice)")
    parser.add_argument("--api", help="platform API URL (default: the running daemon's)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = sub.add_parser("up", help="start the embedded platform in the foreground")
    up.add_argument("--port", type=int, help="API port (default $SLUICE_API_PORT or 8070)")
    up.add_argument("--deploy", action="append", type=Path, default=[], metavar="PATH",
                    help="deploy this function file (or every one in this folder) once up")
    up.add_argument("--no-broker", action="store_true",
                    help="do not start the embedded Kafka broker")
    up.add_argument("--platform", choices=["local", "ray"], default="local",
                    help="ray: every job run and every worker of an http, serving or kafka "
                    "function runs in a Ray actor with the spec's resources (HTTP still goes "
                    "straight to the workers)")
    up.add_argument("--ray-address", metavar="auto|ADDRESS",
                    help="the Ray cluster to join (auto: the one `ray start` started here); "
                    "unset, a local Ray is started with the daemon")
    up.add_argument("--ray-cpus", type=int, metavar="N",
                    help="CPUs of the local Ray (default: all of this machine's)")

    sub.add_parser("info", help="where the platform is: API address, state directory")

    deploy = sub.add_parser("deploy",
                            help="deploy a handler file, a function.yaml or a notebook")
    function_flags(deploy)
    _output_flag(deploy)

    get = sub.add_parser("get", help="list functions, or show one")
    get.add_argument("name", nargs="?")
    _output_flag(get)

    invoke = sub.add_parser("invoke", help="call a function and print its answer")
    invoke.add_argument("name")
    invoke.add_argument("--body", default="", help="request body; @FILE reads a file")
    invoke.add_argument("--method", default="POST")
    invoke.add_argument("--path", default="/", help="path and query, e.g. /score?x=1")
    invoke.add_argument("--content-type", help="default: JSON if the body parses as JSON")
    invoke.add_argument("-H", "--header", action="append", default=[], metavar="NAME:VALUE")
    invoke.add_argument("-i", "--include", action="store_true", help="print status and headers")

    logs = sub.add_parser("logs", help="a function's logs (JSON lines)")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--tail", type=int, default=100, help="lines from the end (0: all)")

    export = sub.add_parser("export", help="print a deployed function's spec as YAML")
    export.add_argument("name")
    export.add_argument("--format", choices=["nuclio", "sluice"], default="nuclio",
                        help="nuclio: a NuclioFunction function.yaml (default); sluice: the spec")

    delete = sub.add_parser("delete", help="stop a function and remove it")
    delete.add_argument("name")

    from . import kafka_cli, models_cli, pipeline_cli, runs_cli

    kafka_cli.add_commands(sub)
    runs_cli.add_commands(sub)
    models_cli.add_commands(sub)
    pipeline_cli.add_commands(sub)

    from .manifests import command as render_cli

    render_cli.add_commands(sub, function_flags)

    scale = sub.add_parser("scale", help="change replicas or workers (rolling, no downtime)")
    scale.add_argument("name")
    scale.add_argument("--replicas", type=int,
                       help="the minimum (a lower maximum is raised to it, which fixes the "
                            "replicas there)")
    scale.add_argument("--max-replicas", type=int, metavar="N",
                       help="the autoscaling bound: above the minimum, replicas follow the load")
    scale.add_argument("--workers", type=int)
    _output_flag(scale)
    return parser


def function_flags(parser: argparse.ArgumentParser) -> None:
    """What names a function to deploy (or render): a file and the spec options over it."""
    parser.add_argument("path", type=Path, nargs="?",
                        help="FILE.py (handler), function.yaml, or NOTEBOOK.ipynb (exported as "
                             "nuclio-jupyter does: '# nuclio: ignore' cells dropped, %%nuclio "
                             "magics read); none with --model")
    parser.add_argument("--name", help="function name (default: from the file)")
    parser.add_argument("--handler", help="'module:function' or 'function' (default: handler)")
    parser.add_argument("--kind", choices=["http", "job", "serving"])
    parser.add_argument("--trigger", action="append", metavar="KIND[:key=value,...]",
                        help="e.g. http, or http:port=8081 (repeatable)")
    parser.add_argument("--env", action="append", metavar="NAME=VALUE")
    parser.add_argument("--workers", type=int, help="worker processes per replica")
    parser.add_argument("--replicas", type=int)
    parser.add_argument("--timeout", type=float, help="seconds a handler call may take")
    parser.add_argument("--version", dest="fn_version", help="a version label to record")
    model = parser.add_argument_group("serving (these make it --kind serving)")
    model.add_argument("--model", help="the registry model to serve, e.g. fraud@production")
    model.add_argument("--batching", metavar="KEY=VALUE,...",
                       help="max_batch, latency_ms, max_inflight, reload_interval, "
                            "e.g. max_batch=64,latency_ms=20")
    model.add_argument("--backend", choices=["torch", "triton", "kserve"],
                       help="default: kserve if the file defines a kserve.Model, else torch")
    model.add_argument("--inputs", action="append", metavar="NAME:DATATYPE:DIMS",
                       help="a model input, e.g. x:FP32:64 (repeatable; default: the "
                            "signature pushed with the model)")
    model.add_argument("--outputs", action="append", metavar="NAME:DATATYPE:DIMS",
                       help="a model output, e.g. scores:FP32:8 (repeatable)")


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The spec dict that :func:`function_flags`' options describe."""
    from .packaging import serving_options, spec_from_path

    serving = serving_options(args.model, args.batching, args.backend, args.inputs,
                              args.outputs)
    return spec_from_path(args.path, name=args.name, handler=args.handler, kind=args.kind,
                          triggers=args.trigger, env=args.env, workers=args.workers,
                          replicas=args.replicas, timeout=args.timeout, version=args.fn_version,
                          serving=serving)


def _output_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(home=args.home, api_port=getattr(args, "port", None))


def _client(args: argparse.Namespace) -> Client:
    return Client(api_url=args.api, settings=_settings(args))


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def _when(ts: float | None) -> str:
    """A time for a person: local date and time to the second ('-' for none)."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _function_rows(items: list[dict[str, Any]]) -> str:
    rows = [["NAME", "KIND", "STATE", "REPLICAS", "WORKERS", "TRIGGERS", "ENDPOINT", "VERSION"]]
    for item in items:
        st = item["status"]
        version = str(st["generation"]) + (f" ({st['version']})" if st.get("version") else "")
        job = st["kind"] == "job"  # no workers: a process per run
        rows.append([st["name"], st["kind"], st["state"], "-" if job else str(st["replicas"]),
                     f"{st.get('runs_active', 0)} running" if job else
                     f"{st['workers_ready']}/{st['replicas'] * st['workers']}",
                     ",".join(st["triggers"]) or "-",
                     f"sluice run {st['name']}" if job else st["endpoint"] or "-", version])
    return _table(rows)


def _show(item: dict[str, Any]) -> str:
    st = item["status"]
    lines = [_function_rows([item]), ""]
    if st.get("message"):
        lines.append(f"message:   {st['message']}")
    lines.append(f"handler:   {item['spec'].get('handler')}")
    lines.append(f"restarts:  {st['restarts']}")
    bounds = st.get("autoscale")
    if bounds:
        lines.append(f"autoscale: {bounds['min']} to {bounds['max']} replicas at "
                     f"{bounds['target']:.0%} of a worker each; load {bounds['load']:.2f} "
                     f"worker(s), {st.get('desired_replicas', st['replicas'])} replica(s) wanted")
    for partition, lag in sorted(st.get("lag", {}).items()):
        lines.append(f"lag:       {partition}  {lag if lag >= 0 else 'unknown (broker down?)'}")
    updated = datetime.fromtimestamp(st["updated"]).isoformat(timespec="seconds")
    lines.append(f"updated:   {updated}")
    return "\n".join(lines)


def _print(args: argparse.Namespace, payload: Any, text: str) -> None:
    print(json.dumps(payload, indent=2) if args.output == "json" else text)


# -- commands ------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    import asyncio

    import uvloop

    from .platform.daemon import run_daemon

    settings = _settings(args)
    try:
        uvloop.run(run_daemon(settings, args.deploy, embedded_broker=not args.no_broker,
                              ray=args.platform == "ray", ray_address=args.ray_address,
                              ray_cpus=args.ray_cpus))
    except KeyboardInterrupt:
        pass
    except asyncio.CancelledError:
        pass
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    settings = _settings(args)
    client = _client(args)
    print(f"state directory  {settings.home}")
    try:
        info = client.info()
    except SluiceError:
        print(f"API              {client.api_url}  (not running: start it with `sluice up`)")
        return 1
    print(f"API              {info['api_url']}  (pid {info['pid']}, version {info['version']})")
    print(f"token            {settings.token_path}")
    print(f"nuclio dashboard {info['api_url']}/nuclio  (for nuclio-jupyter: "
          "sluice.nuclio_dashboard_url() adds the token)")
    print(f"broker           {info.get('broker') or '-'}")
    if info.get("platform") == "ray":
        print(f"platform         ray at {info.get('ray')}: every job run and every worker a "
              "Ray actor")
    else:
        print("platform         local (every function a process on this machine)")
    print(f"functions        {info['functions']}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    started = time.monotonic()
    print(f"Deploying {spec.get('name')} from {args.path or args.model} ...", file=sys.stderr,
          flush=True)
    result = _client(args).deploy(spec)
    st = result["status"]
    where = (f"start a run with `sluice run {st['name']}`" if st["kind"] == "job" else
             f"at {st['endpoint'] or 'no HTTP endpoint'}")
    _print(args, result, f"{st['name']} is {st['state']} (generation {st['generation']}) in "
                         f"{time.monotonic() - started:.2f}s; {where}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.name:
        item = client.get(args.name)
        _print(args, item, _show(item))
        return 0
    items = client.list()
    _print(args, items, _function_rows(items) if items else
           "No functions deployed. Deploy one: sluice deploy examples/echo.py")
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    body = args.body
    raw = Path(body[1:]).read_bytes() if body.startswith("@") else body.encode()
    headers = {}
    for item in args.header:
        key, sep, value = item.partition(":")
        if not sep:
            raise SluiceError(f"-H {item!r}: must be NAME:VALUE")
        headers[key.strip()] = value.strip()
    if args.content_type:
        headers["Content-Type"] = args.content_type
    elif raw and "Content-Type" not in headers:
        try:
            json.loads(raw)
            headers["Content-Type"] = "application/json"
        except ValueError:
            headers["Content-Type"] = "text/plain"
    path = args.path if args.path.startswith("/") else "/" + args.path
    status, out_headers, out = _client(args).invoke(args.name, raw, args.method.upper(), path,
                                                    headers)
    if args.include:
        print(f"HTTP {status}")
        for key, value in out_headers.items():
            print(f"{key}: {value}")
        print()
    sys.stdout.buffer.write(out + (b"" if out.endswith(b"\n") else b"\n"))
    if status >= 400:
        print(f"sluice: {args.name} answered HTTP {status}", file=sys.stderr)
        return 1
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    try:
        for line in _client(args).logs(args.name, args.tail, args.follow):
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import yaml

    spec = _client(args).get(args.name)["spec"]
    if args.format == "nuclio":
        from .nuclio_config import to_nuclio

        spec = to_nuclio(spec)
    print(yaml.safe_dump(spec, sort_keys=False), end="")
    return 0


def cmd_kafka(args: argparse.Namespace) -> int:
    from . import kafka_cli

    kafka = kafka_cli.connection(_settings(args).kafka_cluster(), _client(args).info)
    command = {"topics": kafka_cli.cmd_topics, "produce": kafka_cli.cmd_produce,
               "consume": kafka_cli.cmd_consume}[args.command]
    return command(args, kafka)


def cmd_runs(args: argparse.Namespace) -> int:
    from . import runs_cli

    command = {"run": runs_cli.cmd_run, "runs": runs_cli.cmd_runs,
               "schedule": runs_cli.cmd_schedule}[args.command]
    return command(args, _client(args))


def cmd_models(args: argparse.Namespace) -> int:
    from .models_cli import cmd_models as models

    return models(args, _settings(args).artifacts_uri())


def cmd_pipeline(args: argparse.Namespace) -> int:
    from . import kafka_cli, pipeline_cli

    client = _client(args)
    return pipeline_cli.cmd_pipeline(
        args, client, lambda: kafka_cli.connection(_settings(args).kafka_cluster(), client.info))


def cmd_render(args: argparse.Namespace) -> int:
    from .manifests.command import cmd_render as render

    return render(args, spec_from_args)


def cmd_delete(args: argparse.Namespace) -> int:
    _client(args).delete(args.name)
    print(f"{args.name} deleted")
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    result = _client(args).scale(args.name, args.replicas, args.workers, args.max_replicas)
    st = result["status"]
    bounds = st.get("autoscale")
    _print(args, result, f"{st['name']}: {st['replicas']} replica(s) x {st['workers']} worker(s),"
                         f" {st['state']}" + (f"; autoscaling {bounds['min']} to {bounds['max']}"
                                              if bounds else ""))
    return 0


COMMANDS = {
    "up": cmd_up, "info": cmd_info, "deploy": cmd_deploy, "get": cmd_get, "invoke": cmd_invoke,
    "logs": cmd_logs, "export": cmd_export, "delete": cmd_delete, "scale": cmd_scale,
    "topics": cmd_kafka, "produce": cmd_kafka, "consume": cmd_kafka,
    "run": cmd_runs, "runs": cmd_runs, "schedule": cmd_runs, "models": cmd_models,
    "pipeline": cmd_pipeline, "render": cmd_render,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SluiceError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # e.g. a malformed SLUICE_API_PORT
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
