"""Job handlers for the run tests: each does one thing a test can check from outside."""

import os
import signal
import subprocess
import sys
import time


def train(context, event):
    """Reports progress, metrics and an artifact; returns what it was given."""
    epochs = event.body["epochs"]
    context.logger.info_with("training", epochs=epochs, trigger=context.trigger.kind)
    print("printed by the handler")
    for epoch in range(epochs):
        context.progress(epoch + 1, epochs, f"epoch {epoch + 1}")
        context.log_metrics(loss=1.0 / (epoch + 1), epoch=epoch + 1)
    context.log_artifact("model", f"file:///models/{context.run_id}.pt")
    return {"epochs": epochs, "lr": event.body["lr"], "attempt": context.attempt}


def flaky(context, event):
    """Fails until its FAIL_TIMES-th attempt (0: always fails)."""
    fail_times = int(os.environ.get("FAIL_TIMES", "0"))
    if fail_times == 0 or context.attempt <= fail_times:
        raise RuntimeError(f"attempt {context.attempt} broke")
    return {"ok_on": context.attempt}


def stubborn(context, event):
    """Ignores SIGTERM and starts a child that ignores it too; writes both pids, then hangs."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                              "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    with open(os.environ["PIDS_FILE"], "w") as out:
        out.write(f"{os.getpid()} {child.pid}")
    time.sleep(600)


def sleeper(context, event):
    """Records when it ran (one line per run), then sleeps ``seconds``."""
    with open(os.environ["RUNS_FILE"], "a") as out:
        out.write(f"{context.run_id} {os.getpid()} {time.time()} "
                  f"{event.headers.get('X-Sluice-Scheduled')}\n")
    time.sleep(float(event.body.get("seconds", 0)))
    return "slept"
