"""A Kafka-triggered scorer: card transactions in, a naive risk score out."""


def handler(context, event):
    amount = float(event.body["amount"])
    return {"card": event.key, "amount": amount, "risky": amount > 1000,
            "partition": event.shard_id, "offset": event.offset}
