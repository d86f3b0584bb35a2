"""``sluice render``: a function or a pipeline as Kubernetes manifests (and ``--apply``).

``add_commands`` stays light (the CLI builds its parser on every call); the renderers, and
the kubernetes and kserve SDKs the validation uses, load only when ``render`` runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sluice.errors import SpecError

from .options import (
    DEFAULT_ARTIFACTS,
    DEFAULT_KAFKA,
    DEFAULT_REGISTRY,
    DEFAULT_SECRET,
    JOBS_MODES,
)

# the function options that name one function, meaningless for a pipeline file
_FUNCTION_OPTIONS = ("name", "handler", "kind", "trigger", "env", "workers", "replicas",
                     "timeout", "fn_version", "model", "batching", "backend", "inputs",
                     "outputs")


def add_commands(sub: Any, function_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    render = sub.add_parser(
        "render", help="render a function or a pipeline as Kubernetes manifests",
        description="Write NuclioFunctions (http, kafka), InferenceServices (serving), "
                    "CronJobs (jobs), the platform's Deployment, and a build context per "
                    "function, all validated first. PATH is a pipeline file (functions: ...) "
                    "or what `sluice deploy` takes, with the same options.")
    function_flags(render)
    render.add_argument("--target", choices=["kubernetes"], default="kubernetes")
    render.add_argument("-o", "--out", type=Path, required=True, metavar="DIR",
                        help="the folder to write (new, empty, or an earlier render's)")
    render.add_argument("--image-registry", default=DEFAULT_REGISTRY, metavar="REGISTRY",
                        help=f"images are REGISTRY/FUNCTION:TAG (default {DEFAULT_REGISTRY})")
    render.add_argument("--tag", default="latest", help="the images' tag (default latest)")
    render.add_argument("--namespace", help="default: kubectl's current namespace")
    render.add_argument("--artifacts", default=DEFAULT_ARTIFACTS, metavar="URI",
                        help="the model registry's store as pods reach it "
                             f"(default {DEFAULT_ARTIFACTS})")
    render.add_argument("--kafka-bootstrap", default=DEFAULT_KAFKA, metavar="HOST:PORT,...",
                        help="for Kafka triggers that name no bootstrap_servers "
                             f"(default {DEFAULT_KAFKA})")
    render.add_argument("--jobs", choices=JOBS_MODES, default="cronjob",
                        help="job functions as CronJobs (default: runs to completion, with "
                             "retries and a deadline) or as NuclioFunctions")
    render.add_argument("--secret", default=DEFAULT_SECRET, metavar="NAME",
                        help="the Secret every sluice pod takes env from, if it exists "
                             f"(default {DEFAULT_SECRET})")
    render.add_argument("--state-size", default="1Gi", metavar="SIZE|none",
                        help="the platform's state on a PersistentVolumeClaim of this size "
                             "(default 1Gi); none: an emptyDir, lost when its pod moves")
    render.add_argument("--no-platform", action="store_true",
                        help="leave out the platform's own Deployment, Service, ConfigMap")
    render.add_argument("--apply", action="store_true",
                        help="then run `kubectl apply -f DIR` (needs a kubeconfig)")


def _is_pipeline(path: Path | None) -> bool:
    if path is None or path.suffix not in (".yaml", ".yml") or not path.is_file():
        return False
    from sluice.packaging import yaml_mapping

    data = yaml_mapping(path, "a pipeline or a function spec")
    return isinstance(data.get("functions"), dict) and "apiVersion" not in data


def cmd_render(args: argparse.Namespace,
               spec_from_args: Callable[[argparse.Namespace], dict[str, Any]]) -> int:
    from sluice.spec import parse_spec

    from .kubectl import apply
    from .options import RenderOptions
    from .render import render_specs
    from .writer import write_bundle

    options = RenderOptions(image_registry=args.image_registry, tag=args.tag,
                            namespace=args.namespace, artifacts=args.artifacts,
                            kafka_bootstrap=args.kafka_bootstrap, jobs=args.jobs,
                            secret=args.secret, platform=not args.no_platform,
                            state_size=None if args.state_size.lower() == "none"
                            else args.state_size)
    pipeline = None
    if _is_pipeline(args.path):
        given = [f"--{o.replace('fn_', '').replace('_', '-')}" for o in _FUNCTION_OPTIONS
                 if getattr(args, o) not in (None, [])]
        if given:
            raise SpecError(f"{', '.join(given)}: these name one function; a pipeline's "
                            f"functions are set in {args.path}")
        from sluice.pipeline import load_pipeline

        pipeline = load_pipeline(args.path)
        specs = pipeline.specs()
    else:
        spec = parse_spec(spec_from_args(args))
        specs = {spec.name: spec}
    bundle = render_specs(specs, options, pipeline)
    written = write_bundle(bundle.outputs(), args.out)
    for warning in bundle.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"Rendered {len(bundle.resources)} resource(s) for {len(specs)} function(s) into "
          f"{args.out} ({len(written)} files; {args.out / 'README.md'} says what next)")
    if args.apply:
        print(apply(args.out), end="")
    return 0
