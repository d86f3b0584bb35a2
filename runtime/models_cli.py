"""``sluice models``: push model files to the registry, move aliases, list and show versions.

The CLI talks to the artifact store directly (as ``sluice topics`` talks to Kafka): the
platform does not need to run. The store is ``Settings.artifacts_uri()``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .cli import _table, _when
from .errors import SpecError
from .params import parse_param_option


def add_commands(sub: Any) -> None:
    models = sub.add_parser("models", help="the model registry: push, alias, list, show")
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    push = actions.add_parser("push", help="store a model file as the next version")
    push.add_argument("name")
    push.add_argument("file", type=Path)
    push.add_argument("--metrics", default="", metavar="K=V,...", help="e.g. auc=0.93,loss=0.2")
    push.add_argument("--param", action="append", default=[], metavar="K=V",
                      help="a training param to record (repeatable)")
    push.add_argument("--fingerprint", help="what identifies the training data")
    push.add_argument("--inputs", action="append", default=[], metavar="NAME:DATATYPE:DIMS",
                      help="its signature, served when a function names none: e.g. x:FP32:64 "
                           "(repeatable)")
    push.add_argument("--outputs", action="append", default=[], metavar="NAME:DATATYPE:DIMS",
                      help="e.g. scores:FP32:8 (repeatable)")
    alias = actions.add_parser("alias", help="point an alias (production, candidate) at a version")
    alias.add_argument("name")
    alias.add_argument("alias")
    alias.add_argument("version", type=int)
    listing = actions.add_parser("list", help="models, or one model's versions")
    listing.add_argument("name", nargs="?")
    show = actions.add_parser("show", help="one version: NAME, NAME:3 or NAME@production")
    show.add_argument("ref")
    for parser in (push, alias, listing, show):
        parser.add_argument("-o", "--output", choices=["table", "json"], default="table")


def _pairs(text: str, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            key, value = parse_param_option(item)
        except ValueError:
            raise SpecError(f"{flag} {item!r}: must be NAME=VALUE, e.g. {flag} auc=0.93") from None
        out[key] = value
    return out


def cmd_models(args: argparse.Namespace, artifacts_uri: str) -> int:
    from sluice.serving.registry import ModelRegistry, open_store

    from .packaging import serving_options


    registry = ModelRegistry(open_store(artifacts_uri))
    action = args.models_command
    if action == "push":
        metrics = _pairs(args.metrics, "--metrics")
        params: dict[str, Any] = {}
        for item in args.param:
            params.update(_pairs(item, "--param"))
        signature = serving_options(inputs=args.inputs, outputs=args.outputs)
        record = registry.push(args.name, args.file, metrics=metrics, params=params,
                               data_fingerprint=args.fingerprint, signature=signature)
        _out(args, record.__dict__, f"{record.name} version {record.version} "
             f"({record.size:,} bytes, sha256 {record.sha256[:12]}...) in {registry.store.uri}")
        return 0
    if action == "alias":
        registry.set_alias(args.name, args.alias, args.version)
        _out(args, registry.aliases(args.name),
             f"{args.name}@{args.alias} -> version {args.version}")
        return 0
    if action == "show":
        record = registry.resolve(args.ref)
        aliases = [a for a, v in registry.aliases(record.name).items() if v == record.version]
        data = {**record.__dict__, "aliases": aliases, "uri": f"{registry.store.uri}/"
                f"{record.key}"}
        lines = [f"model      {record.name} version {record.version}"
                 + (f" ({', '.join(sorted(aliases))})" if aliases else ""),
                 f"file       {data['uri']}",
                 f"size       {record.size:,} bytes, sha256 {record.sha256}",
                 f"created    {_when(record.created)}",
                 f"metrics    {json.dumps(record.metrics)}",
                 f"params     {json.dumps(record.params)}",
                 f"data       {record.data_fingerprint or '-'}",
                 f"signature  {_signature(record.signature)}"]
        _out(args, data, "\n".join(lines))
        return 0
    names = [args.name] if args.name else _model_names(registry)
    rows = [["NAME", "VERSION", "ALIASES", "CREATED", "SIZE", "METRICS"]]
    items = []
    for name in names:
        aliases = registry.aliases(name)
        for record in registry.versions(name):
            tags = sorted(a for a, v in aliases.items() if v == record.version)
            items.append({**record.__dict__, "aliases": tags})
            rows.append([name, str(record.version), ",".join(tags) or "-",
                         _when(record.created), f"{record.size:,}",
                         " ".join(f"{k}={v}" for k, v in record.metrics.items()) or "-"])
    if args.output == "json":
        print(json.dumps(items, indent=2))
    elif len(rows) == 1:
        print("No models yet. Push one: sluice models push NAME FILE --metrics auc=0.9"
              if not args.name else f"No versions of {args.name!r} yet.")
    else:
        print(_table(rows))
    return 0


def _signature(signature: dict[str, list[dict[str, Any]]]) -> str:
    def side(tensors: list[dict[str, Any]]) -> str:
        return ", ".join(f"{t['name']}:{t['datatype']}:{','.join(map(str, t['dims']))}"
                         for t in tensors)

    if not signature:
        return "- (push with --inputs/--outputs to record one)"
    return f"{side(signature.get('inputs', []))} -> {side(signature.get('outputs', []))}"


def _model_names(registry: Any) -> list[str]:
    return sorted({key.split("/")[1] for key in registry.store.list("models/")
                   if key.count("/") >= 2})


def _out(args: argparse.Namespace, payload: Any, text: str) -> None:
    print(json.dumps(payload, indent=2) if args.output == "json" else text)
