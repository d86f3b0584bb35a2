"""Handlers for bench/kafka_throughput.py."""


def noop_batch(context, events):
    return None


def stamp(context, event):
    # the input record's timestamp travels to the output, for end-to-end latency
    return {"ts_ms": event.timestamp.timestamp() * 1000}
