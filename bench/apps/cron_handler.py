"""For bench/cron_accuracy.py: how late each fire reached the handler."""

import json
import os
import time
from datetime import datetime


def handler(context, event):
    scheduled = datetime.fromisoformat(event.headers["X-Sluice-Scheduled"]).timestamp()
    with open(os.environ["FIRES_FILE"], "a") as out:
        out.write(json.dumps({"late_ms": (time.time() - scheduled) * 1000}) + "\n")
    return "ok"
