"""``make run``: the card-fraud pipeline end to end on the embedded platform.

    python -m sluice.functions.demo [--events 10000] [--once]

1. starts the platform (``sluice up``, state in ``.sluice-demo/``, fresh each time unless
   ``--keep``);
2. deploys ``functions/pipeline.yaml``: topics, jobs, the setup runs (generate the history,
   etl, train the first model), then enrich and serve;
3. streams the days after the history into ``transactions`` and follows them through enrich
   and score to ``fraud-predictions``, sampling consumer lag;
4. calls the model over HTTP (V2) to measure serving latency;
5. retrains once, as the nightly cron would: the new days' export, etl, train; the candidate
   is promoted only if it beats production on the same held-out days;
6. prints a summary, and keeps the platform running until Ctrl-C (``--once``: stops it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sluice.client import Client
from sluice.errors import PlatformError, SluiceError
from sluice.pipeline import load_pipeline
from sluice.pipeline_cli import cmd_deploy, follow_run, served_model
from sluice.serving.artifacts import open_store
from sluice.serving.registry import ModelRegistry
from sluice.settings import Settings

from .evaluation import auc
from .features import enrich
from .stream import Predictions, Scored, publish
from .transactions import generate


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start_platform(home: Path, port: int) -> subprocess.Popen[bytes]:
    """``sluice up`` in the background (its log in the state folder); returns once its API
    answers."""
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "platform.log", "ab")  # noqa: SIM115 - the child's
    process = subprocess.Popen([sys.executable, "-m", "sluice.cli", "up"], stdout=log,
                               stderr=subprocess.STDOUT, env=os.environ.copy())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PlatformError(f"the platform exited at start; see {home / 'platform.log'}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1.0)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.terminate()
    raise PlatformError(f"the platform did not answer on port {port} within 60 s")


@dataclass
class LagSampler:
    """Polls the summed consumer lag of some functions in a thread."""

    client: Client
    names: list[str]
    period: float = 0.5
    peaks: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            for name in self.names:
                try:
                    lag = self.client.get(name)["status"].get("lag") or {}
                except SluiceError:
                    continue
                total = sum(value for value in lag.values() if value >= 0)
                self.peaks[name] = max(self.peaks.get(name, 0), total)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def serving_latency(endpoint: str, vectors: list[list[float]]) -> list[float]:
    """Milliseconds per V2 request, one after another over one kept-alive connection."""
    times = []
    with httpx.Client(base_url=endpoint, timeout=10.0) as http:
        for vector in vectors:
            body = {"inputs": [{"name": "x", "shape": [1, len(vector)], "datatype": "FP32",
                                "data": vector}]}
            began = time.perf_counter()  # refusals and waits count toward the latency
            for _ in range(20):
                answer = http.post("/v2/models/fraud/infer", json=body)
                if answer.status_code != 503:
                    break
                # refused at once, as the model could not meet its 20 ms objective then (a
                # busy machine): a client tries again shortly
                time.sleep(0.05)
            times.append((time.perf_counter() - began) * 1000)
            answer.raise_for_status()
    return times


def served_version(endpoint: str) -> int | None:
    """The fraud model version serve reports over V2 (None while it does not answer)."""
    served = served_model(endpoint, "fraud")
    return int(served.rsplit(":", 1)[1]) if served else None


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Steps 2 to 5 against a running platform; what the summary shows."""
    client = Client()
    pipeline = load_pipeline(args.file)
    out: dict[str, Any] = {}
    say(f"\n== 1/4 deploying {args.file} ==")
    kafka = {"bootstrap_servers": [client.info()["broker"]]}
    cmd_deploy(argparse.Namespace(file=args.file, no_setup=False, output="text"), client,
               lambda: kafka)
    history = dict(pipeline.functions["generate"].get("params") or {})
    first_day = int(history.get("first_day", 0)) + int(history.get("days", 10))
    seed = int(history.get("seed", 42))

    say(f"\n== 2/4 streaming {args.events:,} live transactions (days after the history) ==")
    live = [txn for day in generate(args.events, args.days, seed, cards=int(
        history.get("cards", 500)), first_day=first_day) for txn in day]
    predictions = Predictions(kafka["bootstrap_servers"], "fraud-predictions")
    sampler = LagSampler(client, ["enrich", "serve"])
    began = time.monotonic()
    publish(kafka["bootstrap_servers"], "transactions", live,
            progress=lambda n: say(f"  published {n:,}"))
    published = time.monotonic() - began
    scored = predictions.collect({txn.id for txn in live}, Scored(),
                                 until=time.monotonic() + 120 + len(live) / 500,
                                 on_batch=None)
    predictions.close()
    out["stream"] = {"events": len(live), "publish_s": published, "scored": len(scored.labels),
                     "seconds": (scored.last or began) - began, "lag": sampler.stop(),
                     "auc": auc(scored.scores, scored.labels)
                     if 0 < sum(scored.labels) < len(scored.labels) else None,
                     "fraud": sum(txn.fraud for txn in live)}
    say(f"  scored {len(scored.labels):,} of {len(live):,}")

    say(f"\n== 3/4 {args.requests} V2 requests over HTTP to serve ==")
    endpoint = client.get("serve")["status"]["endpoint"]
    vectors = enrich({}, live[:args.requests])
    out["latency_ms"] = serving_latency(endpoint, vectors)
    out["served_before"] = served_version(endpoint)

    say("\n== 4/4 the nightly retrain, run now: the new days' export, etl, train ==")
    follow_run(client, "generate", {**history, "first_day": first_day, "days": args.days,
                                    "events": args.events})
    follow_run(client, "etl", {})
    trained = follow_run(client, "train", {})["outputs"]["result"]
    out["retrain"] = trained
    deadline = time.monotonic() + 20
    wanted = int(trained["model"].split(":")[1]) if trained["promoted"] else None
    out["served_after"] = served_version(endpoint)
    while wanted is not None and out["served_after"] != wanted and time.monotonic() < deadline:
        time.sleep(0.5)  # serve follows the alias (every 5 s)
        out["served_after"] = served_version(endpoint)
    registry = ModelRegistry(open_store(Settings.from_env().artifacts_uri()))
    out["models"] = registry.versions("fraud")
    out["aliases"] = registry.aliases("fraud")
    out["endpoint"] = endpoint
    return out


def summary(out: dict[str, Any], api: str) -> str:
    stream, latency, retrain = out["stream"], out["latency_ms"], out["retrain"]
    rate = stream["scored"] / stream["seconds"] if stream["seconds"] else 0.0
    lines = ["", "== the fraud pipeline, end to end ==",
             f"stream    {stream['events']:,} transactions published in "
             f"{stream['publish_s']:.1f} s ({stream['fraud']} fraudulent)",
             f"          enriched and scored: {stream['scored']:,} of {stream['events']:,}, "
             f"{rate:,.0f} events/s end to end",
             "          max consumer lag: " + ", ".join(
                 f"{name} {lag:,}" for name, lag in sorted(stream["lag"].items())),
             "          AUC of the live scores: " + (f"{stream['auc']:.4f}" if stream["auc"]
                                                     is not None else "n/a")]
    aliases = {version: name for name, version in out["aliases"].items()}
    lines.append("models    " + "\n          ".join(
        f"fraud:{m.version}  AUC {m.metrics.get('auc')}  (amount alone: "
        f"{m.metrics.get('baseline_auc')})  trained on {m.metrics.get('train_rows'):,} rows"
        + (f"  [{aliases[m.version]}]" if m.version in aliases else "")
        for m in out["models"]))
    lines.append(f"retrain   {retrain['model']}: {retrain['decision']} -> "
                 + ("promoted" if retrain["promoted"] else "production unchanged"))
    lines.append(f"serving   {len(latency)} V2 requests one by one: p50 "
                 f"{statistics.median(latency):.2f} ms, p99 {percentile(latency, 0.99):.2f} ms; "
                 f"serving fraud:{out['served_after']} (was fraud:{out['served_before']})")
    lines += ["next      sluice pipeline status                 each function, lag, last run",
              f"          curl {out['endpoint']}/v2/models/fraud   the served model (V2)",
              "          sluice runs; sluice models list fraud   runs; versions and metrics",
              "          sluice logs enrich; sluice consume fraud-predictions --limit 5",
              f"          (the platform's API: {api}; state: $SLUICE_HOME)"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make run", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--file", default="functions/pipeline.yaml")
    parser.add_argument("--events", type=int, default=10_000, help="live events (default 10000)")
    parser.add_argument("--days", type=int, default=2, help="days they span (default 2)")
    parser.add_argument("--requests", type=int, default=500, help="V2 requests for latency")
    parser.add_argument("--home", default=".sluice-demo", help="state folder (.sluice-demo)")
    parser.add_argument("--port", type=int, default=8070, help="the platform's API port")
    parser.add_argument("--keep", action="store_true", help="keep the state of a last run")
    parser.add_argument("--once", action="store_true", help="stop the platform at the end")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = Path(args.home).resolve()
    if home.exists() and not args.keep:
        if any(home.iterdir()) and not (home / "state.db").exists():
            say(f"{home} holds files that are not a sluice state folder; choose --home")
            return 2
        shutil.rmtree(home)
        say(f"fresh state in {home} (--keep keeps the last run's)")
    os.environ["SLUICE_HOME"] = str(home)
    os.environ["SLUICE_API_PORT"] = str(args.port)
    api = f"http://127.0.0.1:{args.port}"
    try:
        httpx.get(f"{api}/api/health", timeout=1.0)
        say(f"something already answers on {api}; stop it or choose --port")
        return 2
    except httpx.HTTPError:
        pass
    say(f"starting the platform (sluice up) on {api} ...")
    platform = start_platform(home, args.port)
    try:
        out = run(args)
        print(summary(out, api), flush=True)
        if not args.once:
            say(f"\nThe platform keeps running (pid {platform.pid}); Ctrl-C stops it.")
            platform.wait()
    except SluiceError as exc:
        say(f"make run: {exc}\n(the platform's log: {home / 'platform.log'})")
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        if platform.poll() is None:
            platform.send_signal(signal.SIGTERM)
            try:
                platform.wait(30)
            except subprocess.TimeoutExpired:
                platform.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
