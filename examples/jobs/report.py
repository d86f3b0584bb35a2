"""A job: summarise the last `days` of (generated) hourly transactions.

Run it on demand with `sluice run report --param days=3`, or let its cron trigger
(report.yaml) run it nightly. Each run is its own process; what it returns, and the metrics
and artifacts it logs, are stored with the run (`sluice runs show RUN_ID`).
"""

import random
import time


def handler(context, event):
    days = event.body["days"]
    pace = event.body.get("pace", 0.0)  # seconds per day: stands in for reading a day's files
    rng = random.Random(days)  # deterministic: the same params give the same report
    rows = 0
    flagged = 0
    for day in range(days):
        amounts = [rng.expovariate(1 / 80) for _ in range(24)]  # one transaction an hour
        rows += len(amounts)
        flagged += sum(amount > 300 for amount in amounts)
        time.sleep(pace)
        context.progress(day + 1, days, f"day {day + 1} of {days}")
    context.log_metrics(rows=rows, flagged_share=round(flagged / rows, 4))
    context.logger.info_with("report ready", rows=rows, flagged=flagged)
    return {"days": days, "rows": rows}
