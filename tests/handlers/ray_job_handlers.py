"""Job handlers for the Ray platform tests: each says where it ran."""

import json
import os
import time
from pathlib import Path


def _parent() -> str:
    """The command line of the process that started this one (a Ray actor's worker on Ray)."""
    return Path(f"/proc/{os.getppid()}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def where(context, event):
    """Reports progress and a metric, returns its params and what started its process."""
    steps = event.body["steps"]
    for step in range(steps):
        context.progress(step + 1, steps, f"step {step + 1}")
    context.log_metrics(steps=steps)
    print("printed on ray")
    return {"steps": steps, "parent": _parent(), "ray_address": os.environ.get("RAY_ADDRESS"),
            "resources": json.loads(os.environ.get("SLUICE_RAY_RESOURCES", "null"))}


def dies_first(context, event):
    """Writes its pid and its parent's (the actor) to PIDS_FILE; the first attempt then hangs
    (the test kills its actor), a later one succeeds."""
    with open(os.environ["PIDS_FILE"], "a") as out:
        out.write(f"{context.attempt} {os.getpid()} {os.getppid()}\n")
    if context.attempt == 1:
        time.sleep(600)
    return {"attempt": context.attempt}


def uses_ray(context, event):
    """Joins the Ray cluster it runs on (RAY_ADDRESS, as functions/tune.py does) and runs a
    task there."""
    import ray

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        return {"cpus": ray.cluster_resources().get("CPU"),
                "task": ray.get(ray.remote(num_cpus=0)(lambda: "ran").remote())}
    finally:
        ray.shutdown()


def leaves_child(context, event):
    """Starts a child that would sleep for ten minutes, writes its pid, and returns."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(os.environ["PIDS_FILE"]).write_text(str(child.pid))
    return "left a child"
