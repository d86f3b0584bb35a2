"""For bench/cron_accuracy.py: when each run's handler started (its first line)."""

import json
import os
import time
from datetime import datetime


def handler(context, event):
    at = time.time()
    scheduled = event.headers.get("X-Sluice-Scheduled")
    with open(os.environ["STARTS_FILE"], "a") as out:
        out.write(json.dumps({
            "run": context.run_id, "at": at,
            "scheduled": datetime.fromisoformat(scheduled).timestamp() if scheduled else None,
        }) + "\n")
    return "ok"
